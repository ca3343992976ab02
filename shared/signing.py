"""Webhook signatures (partners and the desk to the notifier): HMAC-SHA256 over
``"<timestamp>.<raw body>"``.

Header ``Arrears-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``. Any of the partner's current
secrets (two during a rotation) may have signed it; the timestamp must be within the tolerance
of now, so a captured request cannot be replayed later (and within the tolerance, the partner's
event id makes a replay a no-op). Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
HEADER = "Arrears-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def header_value(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> Verdict:
    """``now`` is wall time (seconds): signatures guard transport, not business time."""
    if not header:
        return Verdict(False, "missing signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return Verdict(False, "malformed signature")
    if abs(now - timestamp) > tolerance:
        return Verdict(False, "signature timestamp outside the tolerance")
    expected = [sign(secret, timestamp, body) for secret in secrets]
    # Every pair is compared (no early exit) so timing says nothing about which one matched.
    matched = False
    for candidate in candidates:
        for value in expected:
            matched |= hmac.compare_digest(candidate, value)
    return Verdict(True) if matched else Verdict(False, "signature does not match")
