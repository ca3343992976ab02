"""Fingerprints of contact addresses (phone numbers, emails, postal addresses).

Services that must tell addresses apart (an opt-out is for *that* number; a cap counts calls to
*that* number) but have no reason to hold them share a keyed hash instead: equal addresses give
equal fingerprints, and without the key a fingerprint cannot be brute-forced back into a phone
number the way a plain hash of a phone number can.
"""

from __future__ import annotations

import hashlib
import hmac


def normalise(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "phone":
        return "".join(ch for ch in value if ch.isdigit() or ch == "+")
    if kind == "email":
        return value.lower()
    return " ".join(value.lower().split())


def fingerprint(kind: str, value: str | None, key: str) -> str | None:
    """``kind`` is phone, email or postal; None for a missing or empty address."""
    if not value or not value.strip():
        return None
    message = f"{kind}:{normalise(kind, value)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:32]
