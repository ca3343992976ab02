// Command metro2check validates a Metro 2 (CDIA, 426-byte character format) file independently
// of the Python code that writes it: fixed-width positions from the CDIA layout, record order,
// field formats, code sets, the cross-field rules (balance at least past due; a payment rating
// with 13 and the other paid statuses, and only with them; the date of first delinquency with
// delinquent statuses and with 13 paid late; a zero balance and a date closed with 13), and the
// trailer's control totals, block count included. With -json it prints every record
// decoded field by field.
//
//	go run ./tools/metro2check [-json] FILE
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

type field struct {
	name          string
	start, length int
	numeric       bool
}

func f(name string, start, length int, numeric bool) field {
	return field{name, start, length, numeric}
}

var header = []field{
	f("RecordDescriptorWord", 0, 4, true), f("RecordIdentifier", 4, 6, false),
	f("CycleIdentifier", 10, 2, false), f("InnovisProgramIdentifier", 12, 10, false),
	f("EquifaxProgramIdentifier", 22, 10, false), f("ExperianProgramIdentifier", 32, 5, false),
	f("TransUnionProgramIdentifier", 37, 10, false), f("ActivityDate", 47, 8, true),
	f("DateCreated", 55, 8, true), f("ProgramDate", 63, 8, true),
	f("ProgramRevisionDate", 71, 8, true), f("ReporterName", 79, 40, false),
	f("ReporterAddress", 119, 96, false), f("ReporterTelephoneNumber", 215, 10, true),
	f("SoftwareVendorName", 225, 40, false), f("SoftwareVersionNumber", 265, 5, false),
	f("PRBCProgramIdentifier", 270, 10, false), f("Reserved", 280, 146, false),
}

var base = []field{
	f("RecordDescriptorWord", 0, 4, true), f("ProcessingIndicator", 4, 1, true),
	f("TimeStamp", 5, 14, true), f("CorrectionIndicator", 19, 1, true),
	f("IdentificationNumber", 20, 20, false), f("CycleIdentifier", 40, 2, false),
	f("ConsumerAccountNumber", 42, 30, false), f("PortfolioType", 72, 1, false),
	f("AccountType", 73, 2, false), f("DateOpened", 75, 8, true),
	f("CreditLimit", 83, 9, true), f("HighestCredit", 92, 9, true),
	f("TermsDuration", 101, 3, false), f("TermsFrequency", 104, 1, false),
	f("ScheduledMonthlyPaymentAmount", 105, 9, true), f("ActualPaymentAmount", 114, 9, true),
	f("AccountStatus", 123, 2, false), f("PaymentRating", 125, 1, false),
	f("PaymentHistoryProfile", 126, 24, false), f("SpecialComment", 150, 2, false),
	f("ComplianceConditionCode", 152, 2, false), f("CurrentBalance", 154, 9, true),
	f("AmountPastDue", 163, 9, true), f("OriginalChargeOffAmount", 172, 9, true),
	f("DateAccountInformation", 181, 8, true), f("DateFirstDelinquency", 189, 8, true),
	f("DateClosed", 197, 8, true), f("DateLastPayment", 205, 8, true),
	f("InterestTypeIndicator", 213, 1, false), f("Reserved2", 214, 17, false),
	f("Surname", 231, 25, false), f("FirstName", 256, 20, false),
	f("MiddleName", 276, 20, false), f("GenerationCode", 296, 1, false),
	f("SocialSecurityNumber", 297, 9, true), f("DateBirth", 306, 8, true),
	f("TelephoneNumber", 314, 10, true), f("ECOACode", 324, 1, false),
	f("ConsumerInformationIndicator", 325, 2, false), f("CountryCode", 327, 2, false),
	f("FirstLineAddress", 329, 32, false), f("SecondLineAddress", 361, 32, false),
	f("City", 393, 20, false), f("State", 413, 2, false), f("ZipCode", 415, 9, false),
	f("AddressIndicator", 424, 1, false), f("ResidenceCode", 425, 1, false),
}

var trailerStatuses = []string{"DA", "05", "11", "13", "61", "62", "63", "64", "65", "71", "78",
	"80", "82", "83", "84", "88", "89", "93", "94", "95", "96", "97"}

func trailerLayout() []field {
	t := []field{
		f("RecordDescriptorWord", 0, 4, true), f("RecordIdentifier", 4, 7, false),
		f("TotalBaseRecords", 11, 9, true), f("Reserved1", 20, 9, false),
		f("TotalStatusCodeDF", 29, 9, true), f("TotalConsumerSegmentsJ1", 38, 9, true),
		f("TotalConsumerSegmentsJ2", 47, 9, true), f("BlockCount", 56, 9, true),
	}
	for i, code := range trailerStatuses {
		t = append(t, f("TotalStatusCode"+code, 65+9*i, 9, true))
	}
	names := []string{"TotalECOACodeZ", "TotalEmploymentSegments", "TotalOriginalCreditorSegments",
		"TotalPurchasedToSegments", "TotalMortgageInformationSegments",
		"TotalPaymentInformationSegments", "TotalChangeSegments", "TotalSocialNumbersAllSegments",
		"TotalSocialNumbersBaseSegments", "TotalSocialNumbersJ1Segments",
		"TotalSocialNumbersJ2Segments", "TotalDatesBirthAllSegments",
		"TotalDatesBirthBaseSegments", "TotalDatesBirthJ1Segments", "TotalDatesBirthJ2Segments",
		"TotalTelephoneNumbersAllSegments"}
	for i, name := range names {
		t = append(t, f(name, 263+9*i, 9, true))
	}
	return append(t, f("Reserved2", 407, 19, true))
}

var statuses = map[string]bool{"05": true, "11": true, "13": true, "61": true, "62": true,
	"63": true, "64": true, "65": true, "71": true, "78": true, "80": true, "82": true,
	"83": true, "84": true, "88": true, "89": true, "93": true, "94": true, "95": true,
	"96": true, "97": true, "DA": true, "DF": true}
var delinquent = map[string]bool{"61": true, "62": true, "63": true, "64": true, "65": true,
	"71": true, "78": true, "80": true, "82": true, "83": true, "84": true, "88": true,
	"89": true, "93": true, "94": true, "95": true, "96": true, "97": true}

// statuses that need a payment rating: the account's delinquency when it was paid or closed
var ratingRequired = map[string]bool{"05": true, "13": true, "65": true, "88": true, "89": true,
	"94": true, "95": true}
var compliance = map[string]bool{"": true, "XA": true, "XB": true, "XC": true, "XD": true,
	"XE": true, "XF": true, "XG": true, "XH": true, "XJ": true, "XR": true}

func decode(line string, layout []field) map[string]string {
	out := map[string]string{}
	for _, fl := range layout {
		out[fl.name] = strings.TrimRight(line[fl.start:fl.start+fl.length], " ")
	}
	return out
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func validDate(s string, required bool) bool {
	if s == "00000000" || strings.TrimSpace(s) == "" {
		return !required
	}
	_, err := time.Parse("01022006", s)
	return err == nil
}

type checker struct{ errors []string }

func (c *checker) fail(n int, format string, args ...any) {
	c.errors = append(c.errors, fmt.Sprintf("record %d: ", n)+fmt.Sprintf(format, args...))
}

func (c *checker) formats(n int, line string, layout []field) {
	for _, fl := range layout {
		v := line[fl.start : fl.start+fl.length]
		if fl.numeric && !isDigits(v) {
			c.fail(n, "%s must be numeric, got %q", fl.name, v)
		}
	}
}

func main() {
	asJSON := flag.Bool("json", false, "print the decoded records as JSON")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: metro2check [-json] FILE")
		os.Exit(2)
	}
	file, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer file.Close()
	var lines []string
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1024), 1024*1024)
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	c := &checker{}
	trailer := trailerLayout()
	var decoded []map[string]string
	counts := map[string]int{}
	bases, ssns, births, phones, ecoaZ := 0, 0, 0, 0, 0
	if len(lines) < 2 {
		c.fail(0, "a file needs at least a header and a trailer")
	}
	for i, line := range lines {
		n := i + 1
		if len(line) != 426 {
			c.fail(n, "length %d, not 426", len(line))
			continue
		}
		for _, r := range line {
			if r > 126 || r < 32 {
				c.fail(n, "non-printable or non-ASCII character")
				break
			}
		}
		if line[0:4] != "0426" {
			c.fail(n, "record descriptor word %q, not 0426", line[0:4])
		}
		switch {
		case i == 0:
			if line[4:10] != "HEADER" {
				c.fail(n, "the first record must be the HEADER")
			}
			c.formats(n, line, header)
			h := decode(line, header)
			if !validDate(h["ActivityDate"], true) || !validDate(h["DateCreated"], true) {
				c.fail(n, "header dates invalid")
			}
			if h["ReporterName"] == "" {
				c.fail(n, "ReporterName is required")
			}
			decoded = append(decoded, h)
		case i == len(lines)-1:
			if line[4:11] != "TRAILER" {
				c.fail(n, "the last record must be the TRAILER")
			}
			c.formats(n, line, trailer)
			t := decode(line, trailer)
			want := func(name string, got int) {
				var v int
				fmt.Sscanf(t[name], "%d", &v)
				if v != got {
					c.fail(n, "%s is %d, the file has %d", name, v, got)
				}
			}
			want("TotalBaseRecords", bases)
			// unblocked files: validators expect the number of records, header and trailer in
			want("BlockCount", len(lines))
			for _, code := range trailerStatuses {
				want("TotalStatusCode"+code, counts[code])
			}
			want("TotalSocialNumbersBaseSegments", ssns)
			want("TotalDatesBirthBaseSegments", births)
			// no J1/J2 or other segments are written: their totals are zero, and the
			// all-segments totals are the base segments'
			want("TotalSocialNumbersAllSegments", ssns)
			want("TotalDatesBirthAllSegments", births)
			want("TotalTelephoneNumbersAllSegments", phones)
			want("TotalStatusCodeDF", counts["DF"])
			want("TotalECOACodeZ", ecoaZ)
			for _, name := range []string{"TotalConsumerSegmentsJ1", "TotalConsumerSegmentsJ2",
				"TotalEmploymentSegments", "TotalOriginalCreditorSegments",
				"TotalPurchasedToSegments", "TotalMortgageInformationSegments",
				"TotalPaymentInformationSegments", "TotalChangeSegments",
				"TotalSocialNumbersJ1Segments", "TotalSocialNumbersJ2Segments",
				"TotalDatesBirthJ1Segments", "TotalDatesBirthJ2Segments"} {
				want(name, 0)
			}
			decoded = append(decoded, t)
		default:
			bases++
			c.formats(n, line, base)
			b := decode(line, base)
			status := b["AccountStatus"]
			counts[status]++
			if b["SocialSecurityNumber"] != "000000000" {
				ssns++
			}
			if b["DateBirth"] != "00000000" {
				births++
			}
			if b["TelephoneNumber"] != "0000000000" {
				phones++
			}
			if b["ECOACode"] == "Z" {
				ecoaZ++
			}
			if b["ProcessingIndicator"] != "1" {
				c.fail(n, "ProcessingIndicator must be 1")
			}
			if _, err := time.Parse("01022006150405", b["TimeStamp"]); err != nil {
				c.fail(n, "TimeStamp invalid")
			}
			for _, name := range []string{"IdentificationNumber", "ConsumerAccountNumber",
				"AccountType", "TermsDuration", "Surname", "FirstName", "FirstLineAddress",
				"City", "State", "ZipCode", "ECOACode"} {
				if b[name] == "" {
					c.fail(n, "%s is required", name)
				}
			}
			if !strings.Contains("CIMOR", b["PortfolioType"]) || b["PortfolioType"] == "" {
				c.fail(n, "PortfolioType %q invalid", b["PortfolioType"])
			}
			if !statuses[status] {
				c.fail(n, "AccountStatus %q unknown", status)
			}
			if !compliance[b["ComplianceConditionCode"]] {
				c.fail(n, "ComplianceConditionCode %q unknown", b["ComplianceConditionCode"])
			}
			profile := line[126:150]
			for _, r := range profile {
				if !strings.ContainsRune("0123456BDEGHJKL", r) {
					c.fail(n, "PaymentHistoryProfile %q has %q", profile, r)
					break
				}
			}
			if !validDate(b["DateOpened"], true) || !validDate(b["DateAccountInformation"], true) {
				c.fail(n, "DateOpened and DateAccountInformation must be valid dates")
			}
			if delinquent[status] && !validDate(b["DateFirstDelinquency"], true) {
				c.fail(n, "status %s needs the date of first delinquency", status)
			}
			dofd := b["DateFirstDelinquency"] != "00000000"
			if status == "11" && dofd && b["ComplianceConditionCode"] == "" {
				c.fail(n, "status 11 must not carry a date of first delinquency")
			}
			// A paid account keeps the date of first delinquency if it was paid behind
			// (FCRA 623(a)(5)): exactly when its payment rating says it was late.
			if status == "13" && dofd != (b["PaymentRating"] != "0" && b["PaymentRating"] != "") {
				c.fail(n, "status 13 with payment rating %q: date of first delinquency %s",
					b["PaymentRating"], b["DateFirstDelinquency"])
			}
			for _, name := range []string{"DateFirstDelinquency", "DateClosed", "DateLastPayment",
				"DateBirth"} {
				if !validDate(b[name], false) {
					c.fail(n, "%s invalid", name)
				}
			}
			if ratingRequired[status] && !strings.Contains("0123456GL", b["PaymentRating"]) ||
				ratingRequired[status] && b["PaymentRating"] == "" {
				c.fail(n, "status %s needs a payment rating", status)
			}
			if !ratingRequired[status] && b["PaymentRating"] != "" {
				c.fail(n, "status %s must not carry a payment rating", status)
			}
			var balance, pastDue, highest int
			fmt.Sscanf(b["CurrentBalance"], "%d", &balance)
			fmt.Sscanf(b["AmountPastDue"], "%d", &pastDue)
			fmt.Sscanf(b["HighestCredit"], "%d", &highest)
			if pastDue > balance {
				c.fail(n, "AmountPastDue %d exceeds CurrentBalance %d", pastDue, balance)
			}
			if status == "13" && (balance != 0 || pastDue != 0) {
				c.fail(n, "status 13 (paid, zero balance) with balance %d, past due %d",
					balance, pastDue)
			}
			if status == "13" && b["DateClosed"] == "00000000" {
				c.fail(n, "status 13 needs a DateClosed")
			}
			if delinquent[status] && pastDue == 0 && !strings.HasPrefix(status, "6") {
				c.fail(n, "status %s with nothing past due", status)
			}
			if b["PortfolioType"] == "I" && highest == 0 {
				c.fail(n, "an instalment account needs its original loan amount (HighestCredit)")
			}
			if b["PortfolioType"] == "I" && (!isDigits(b["TermsDuration"]) ||
				b["TermsDuration"] == "000") {
				c.fail(n, "an instalment account needs its number of instalments (TermsDuration)")
			}
			if !strings.Contains("DPWBEMLQTSY", b["TermsFrequency"]) || b["TermsFrequency"] == "" {
				c.fail(n, "TermsFrequency %q unknown", b["TermsFrequency"])
			}
			if len(b["State"]) != 2 {
				c.fail(n, "State must be two letters")
			}
			decoded = append(decoded, b)
		}
	}
	if *asJSON {
		out, _ := json.Marshal(decoded)
		fmt.Println(string(out))
	}
	if len(c.errors) > 0 {
		for _, e := range c.errors {
			fmt.Fprintln(os.Stderr, e)
		}
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "valid: %d base records\n", bases)
}
