"""Metro 2 (CDIA) character format: 426-byte header, base segments and trailer.

Field positions (0-based start, length) follow the CDIA layout; alpha fields are upper case and
left-justified, numeric fields right-justified and zero-filled, amounts in whole dollars, dates
MMDDYYYY. ``decode`` reads a record back field by field (used by the tests)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

RECORD = 426
A, N = "A", "N"  # alphanumeric, numeric

HEADER_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("RecordDescriptorWord", 0, 4, N),
    ("RecordIdentifier", 4, 6, A),
    ("CycleIdentifier", 10, 2, A),
    ("InnovisProgramIdentifier", 12, 10, A),
    ("EquifaxProgramIdentifier", 22, 10, A),
    ("ExperianProgramIdentifier", 32, 5, A),
    ("TransUnionProgramIdentifier", 37, 10, A),
    ("ActivityDate", 47, 8, N),
    ("DateCreated", 55, 8, N),
    ("ProgramDate", 63, 8, N),
    ("ProgramRevisionDate", 71, 8, N),
    ("ReporterName", 79, 40, A),
    ("ReporterAddress", 119, 96, A),
    ("ReporterTelephoneNumber", 215, 10, N),
    ("SoftwareVendorName", 225, 40, A),
    ("SoftwareVersionNumber", 265, 5, A),
    ("PRBCProgramIdentifier", 270, 10, A),
    ("Reserved", 280, 146, A),
)

BASE_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("RecordDescriptorWord", 0, 4, N),
    ("ProcessingIndicator", 4, 1, N),
    ("TimeStamp", 5, 14, N),
    ("CorrectionIndicator", 19, 1, N),
    ("IdentificationNumber", 20, 20, A),
    ("CycleIdentifier", 40, 2, A),
    ("ConsumerAccountNumber", 42, 30, A),
    ("PortfolioType", 72, 1, A),
    ("AccountType", 73, 2, A),
    ("DateOpened", 75, 8, N),
    ("CreditLimit", 83, 9, N),
    ("HighestCredit", 92, 9, N),
    ("TermsDuration", 101, 3, A),
    ("TermsFrequency", 104, 1, A),
    ("ScheduledMonthlyPaymentAmount", 105, 9, N),
    ("ActualPaymentAmount", 114, 9, N),
    ("AccountStatus", 123, 2, A),
    ("PaymentRating", 125, 1, A),
    ("PaymentHistoryProfile", 126, 24, A),
    ("SpecialComment", 150, 2, A),
    ("ComplianceConditionCode", 152, 2, A),
    ("CurrentBalance", 154, 9, N),
    ("AmountPastDue", 163, 9, N),
    ("OriginalChargeOffAmount", 172, 9, N),
    ("DateAccountInformation", 181, 8, N),
    ("DateFirstDelinquency", 189, 8, N),
    ("DateClosed", 197, 8, N),
    ("DateLastPayment", 205, 8, N),
    ("InterestTypeIndicator", 213, 1, A),
    ("Reserved2", 214, 17, A),
    ("Surname", 231, 25, A),
    ("FirstName", 256, 20, A),
    ("MiddleName", 276, 20, A),
    ("GenerationCode", 296, 1, A),
    ("SocialSecurityNumber", 297, 9, N),
    ("DateBirth", 306, 8, N),
    ("TelephoneNumber", 314, 10, N),
    ("ECOACode", 324, 1, A),
    ("ConsumerInformationIndicator", 325, 2, A),
    ("CountryCode", 327, 2, A),
    ("FirstLineAddress", 329, 32, A),
    ("SecondLineAddress", 361, 32, A),
    ("City", 393, 20, A),
    ("State", 413, 2, A),
    ("ZipCode", 415, 9, A),
    ("AddressIndicator", 424, 1, A),
    ("ResidenceCode", 425, 1, A),
)

TRAILER_STATUS_CODES = (
    "DA", "05", "11", "13", "61", "62", "63", "64", "65", "71", "78", "80", "82", "83", "84",
    "88", "89", "93", "94", "95", "96", "97",
)  # fmt: skip
TRAILER_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("RecordDescriptorWord", 0, 4, N),
    ("RecordIdentifier", 4, 7, A),
    ("TotalBaseRecords", 11, 9, N),
    ("Reserved1", 20, 9, A),
    ("TotalStatusCodeDF", 29, 9, N),
    ("TotalConsumerSegmentsJ1", 38, 9, N),
    ("TotalConsumerSegmentsJ2", 47, 9, N),
    ("BlockCount", 56, 9, N),
    *((f"TotalStatusCode{code}", 65 + 9 * i, 9, N) for i, code in enumerate(TRAILER_STATUS_CODES)),
    ("TotalECOACodeZ", 263, 9, N),
    ("TotalEmploymentSegments", 272, 9, N),
    ("TotalOriginalCreditorSegments", 281, 9, N),
    ("TotalPurchasedToSegments", 290, 9, N),
    ("TotalMortgageInformationSegments", 299, 9, N),
    ("TotalPaymentInformationSegments", 308, 9, N),
    ("TotalChangeSegments", 317, 9, N),
    ("TotalSocialNumbersAllSegments", 326, 9, N),
    ("TotalSocialNumbersBaseSegments", 335, 9, N),
    ("TotalSocialNumbersJ1Segments", 344, 9, N),
    ("TotalSocialNumbersJ2Segments", 353, 9, N),
    ("TotalDatesBirthAllSegments", 362, 9, N),
    ("TotalDatesBirthBaseSegments", 371, 9, N),
    ("TotalDatesBirthJ1Segments", 380, 9, N),
    ("TotalDatesBirthJ2Segments", 389, 9, N),
    ("TotalTelephoneNumbersAllSegments", 398, 9, N),
    ("Reserved2", 407, 19, N),
)


def dollars(amount: Decimal | None) -> int:
    if amount is None:
        return 0
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def mmddyyyy(value: date | None) -> str:
    return value.strftime("%m%d%Y") if value else "0" * 8


def _put(layout: Sequence[tuple[str, int, int, str]], values: dict[str, object]) -> str:
    out = [" "] * RECORD
    for name, start, length, kind in layout:
        value = values.get(name)
        if kind == N:
            text = "" if value is None else str(value)
            if not text.isdigit() and text:
                raise ValueError(f"{name}: not numeric")
            text = text.rjust(length, "0")
        else:
            text = ("" if value is None else str(value)).upper().ljust(length)
        if len(text) > length:
            text = text[:length] if kind == A else text[-length:]
        out[start : start + length] = text
    record = "".join(out)
    if not record.isascii():
        raise ValueError("Metro 2 records are ASCII")
    return record


@dataclass(frozen=True)
class Reporter:
    identification: str  # the furnisher's id at the bureau
    name: str
    address: str
    telephone: str = ""


@dataclass(frozen=True)
class Base:
    account_number: str
    date_opened: date
    highest_credit: Decimal
    terms_months: int
    terms_frequency: str
    scheduled_payment: Decimal
    actual_payment: Decimal
    status: str
    history: str  # 24 characters, the month before the Date of Account Information first
    special_comment: str
    compliance_code: str
    current_balance: Decimal
    amount_past_due: Decimal
    information_date: date
    first_delinquency: date | None
    last_payment: date | None
    date_closed: date | None
    surname: str
    first_name: str
    ssn: str
    birth_date: date | None
    address_line: str
    city: str
    state: str
    zip_code: str
    payment_rating: str = ""


def header(reporter: Reporter, activity: date, created: date) -> str:
    return _put(
        HEADER_FIELDS,
        {
            "RecordDescriptorWord": "0426",
            "RecordIdentifier": "HEADER",
            "EquifaxProgramIdentifier": reporter.identification,
            "ExperianProgramIdentifier": reporter.identification[:5],
            "TransUnionProgramIdentifier": reporter.identification,
            "ActivityDate": mmddyyyy(activity),
            "DateCreated": mmddyyyy(created),
            "ReporterName": reporter.name,
            "ReporterAddress": reporter.address,
            "ReporterTelephoneNumber": reporter.telephone or None,
            "SoftwareVendorName": "ARREARS",
            "SoftwareVersionNumber": "1",
        },
    )


def base(reporter: Reporter, record: Base, stamp: datetime) -> str:
    return _put(
        BASE_FIELDS,
        {
            "RecordDescriptorWord": "0426",
            "ProcessingIndicator": "1",
            "TimeStamp": stamp.strftime("%m%d%Y%H%M%S"),
            "CorrectionIndicator": "0",
            "IdentificationNumber": reporter.identification,
            "ConsumerAccountNumber": record.account_number,
            "PortfolioType": "I",  # installment
            "AccountType": "01",  # unsecured
            "DateOpened": mmddyyyy(record.date_opened),
            "CreditLimit": None,
            "HighestCredit": dollars(record.highest_credit),
            "TermsDuration": f"{record.terms_months:03d}"[-3:],
            "TermsFrequency": record.terms_frequency,
            "ScheduledMonthlyPaymentAmount": dollars(record.scheduled_payment),
            "ActualPaymentAmount": dollars(record.actual_payment),
            "AccountStatus": record.status,
            "PaymentRating": record.payment_rating,
            "PaymentHistoryProfile": record.history,
            "SpecialComment": record.special_comment,
            "ComplianceConditionCode": record.compliance_code,
            "CurrentBalance": dollars(record.current_balance),
            "AmountPastDue": dollars(record.amount_past_due),
            "DateAccountInformation": mmddyyyy(record.information_date),
            "DateFirstDelinquency": mmddyyyy(record.first_delinquency),
            "DateClosed": mmddyyyy(record.date_closed),
            "DateLastPayment": mmddyyyy(record.last_payment),
            "Surname": record.surname,
            "FirstName": record.first_name,
            "SocialSecurityNumber": record.ssn,
            "DateBirth": mmddyyyy(record.birth_date),
            "ECOACode": "1",  # individual
            "CountryCode": "US",
            "FirstLineAddress": record.address_line,
            "City": record.city,
            "State": record.state,
            "ZipCode": record.zip_code,
        },
    )


class Totals:
    """The trailer's control totals, kept as base segments are written (a file can be far
    larger than what should sit in memory)."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.total = self.ssns = self.births = 0

    def add(self, record: str) -> None:
        self.total += 1
        self.statuses[record[123:125]] += 1
        self.ssns += record[297:306] != "0" * 9
        self.births += record[306:314] != "0" * 8

    def trailer(self) -> str:
        values: dict[str, object] = {
            "RecordDescriptorWord": "0426",
            "RecordIdentifier": "TRAILER",
            "TotalBaseRecords": self.total,
            # An unblocked file: validators expect every record, header and trailer included.
            "BlockCount": self.total + 2,
            "TotalSocialNumbersAllSegments": self.ssns,
            "TotalSocialNumbersBaseSegments": self.ssns,
            "TotalDatesBirthAllSegments": self.births,
            "TotalDatesBirthBaseSegments": self.births,
        }
        values |= {f"TotalStatusCode{code}": self.statuses[code] for code in TRAILER_STATUS_CODES}
        return _put(TRAILER_FIELDS, values)


def trailer(bases: Iterable[str]) -> str:
    totals = Totals()
    for record in bases:
        totals.add(record)
    return totals.trailer()


def decode(record: str) -> dict[str, str]:
    """A record's fields by name (trailing spaces stripped), by its record identifier."""
    if len(record) != RECORD:
        raise ValueError(f"record of {len(record)} bytes, not {RECORD}")
    if record[4:10] == "HEADER":
        layout = HEADER_FIELDS
    elif record[4:11] == "TRAILER":
        layout = TRAILER_FIELDS
    else:
        layout = BASE_FIELDS
    return {name: record[start : start + length].rstrip() for name, start, length, _ in layout}
