"""The self-service page's rules: the signed, expiring link each collection SMS and email
carries (it names only an opaque contact id, never personal data), the light identity check
and its lock, and the session and form tokens. Pure: secrets and instants in, verdicts out."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

from shared.fingerprint import fingerprint

LINK_DAYS = 14  # a link works this long after its message was sent
MAX_WRONG_ANSWERS = 5  # then the page locks for the customer
LOCK = timedelta(hours=24)
SESSION = timedelta(minutes=30)  # after a right answer
PROMISE_DAYS = 30  # a promise made on the page is for a date within this many days
LINK_LINE = {
    "zh-CN": "自助服务：{url}",
    "en-US": "Manage your account: {url}",
}
Method = Literal["birth_date", "national_id_last4"]


class LinkInvalid(ValueError):
    def __init__(self, why: Literal["expired", "invalid"]) -> None:
        super().__init__(why)
        self.why = why


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, message: str) -> str:
    return _b64(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()[:18])


def link_token(secret: str, contact_id: str, expires: datetime) -> str:
    payload = _b64(f"{contact_id}|{int(expires.timestamp())}".encode())
    return f"{payload}.{_mac(secret, 'link:' + payload)}"


def read_link(secret: str, token: str, now: datetime) -> str:
    """The contact id a link names, or :class:`LinkInvalid` (forged, mangled or expired)."""
    payload, _, mac = token.partition(".")
    if not payload or not hmac.compare_digest(mac, _mac(secret, "link:" + payload)):
        raise LinkInvalid("invalid")
    try:
        contact_id, _, expires = _unb64(payload).decode().rpartition("|")
        expiry = datetime.fromtimestamp(int(expires), UTC)
    except (ValueError, UnicodeDecodeError):
        raise LinkInvalid("invalid") from None
    if now >= expiry:
        raise LinkInvalid("expired")
    return contact_id


def session_token(secret: str, token: str, until: datetime) -> str:
    """What the session cookie holds once the identity check passed, for this link only."""
    stamp = str(int(until.timestamp()))
    return f"{stamp}.{_mac(secret, f'session:{token}:{stamp}')}"


def session_valid(secret: str, token: str, cookie: str | None, now: datetime) -> bool:
    if not cookie:
        return False
    stamp, _, mac = cookie.partition(".")
    if not stamp.isdigit() or not hmac.compare_digest(
        mac, _mac(secret, f"session:{token}:{stamp}")
    ):
        return False
    return now < datetime.fromtimestamp(int(stamp), UTC)


def form_token(secret: str, token: str, cookie: str | None) -> str:
    """The CSRF token every form carries: bound to the link and the session (none before the
    identity check), so a form posted from elsewhere is refused."""
    return _mac(secret, f"form:{token}:{cookie or ''}")


def form_valid(secret: str, token: str, cookie: str | None, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(sent or "", form_token(secret, token, cookie))


def answer_ref(method: Method, answer: str, key: str) -> str | None:
    """The fingerprint an answer is compared by (the customer's are kept the same way)."""
    cleaned = answer.strip()
    if method == "birth_date":
        try:
            return fingerprint("birth", date.fromisoformat(cleaned).isoformat(), key)
        except ValueError:
            return None
    digits = "".join(ch for ch in cleaned if ch.isalnum()).upper()
    return fingerprint("nid4", digits[-4:], key) if len(digits) == 4 else None


@dataclass(frozen=True)
class Checked:
    ok: bool
    failures: int
    locked_until: datetime | None


def check(
    expected: str | None,
    given: str | None,
    failures: int,
    locked_until: datetime | None,
    now: datetime,
) -> Checked:
    """A right answer clears the count; a wrong one adds to it, and the fifth in a row locks
    the page for a day. While locked, even a right answer is refused."""
    if locked_until is not None and now < locked_until:
        return Checked(False, failures, locked_until)
    if expected is not None and given is not None and hmac.compare_digest(expected, given):
        return Checked(True, 0, None)
    failures += 1
    return Checked(False, failures, now + LOCK if failures >= MAX_WRONG_ANSWERS else None)


class PromiseRefused(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def promise_terms(amount: str, due: str, today: date) -> tuple[Decimal, date]:
    """A promise made on the page: a positive amount in cents, by a date from today to
    :data:`PROMISE_DAYS` ahead."""
    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        raise PromiseRefused("amount", "not a number") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise PromiseRefused("amount", "a positive amount in cents")
    try:
        day = date.fromisoformat(due.strip())
    except ValueError:
        raise PromiseRefused("due_date", "not a date") from None
    if not today <= day <= today + timedelta(days=PROMISE_DAYS):
        raise PromiseRefused("due_date", f"from today to {PROMISE_DAYS} days ahead")
    return value, day
