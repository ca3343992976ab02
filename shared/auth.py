"""API keys with scopes, for every service's non-health endpoints.

A key is ``<key id>.<secret>``, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
Only the SHA-256 of each secret is configured (``ARREARS_API_KEYS``, a JSON list of
``{"id", "sha256", "scopes"}``), so the configuration holds no usable secret. Keys are long
random tokens, not passwords, so a fast hash is enough; comparison is constant-time. A scope is
``<resource>:<action>`` (``ledger:read``, ``events:write``); ``*`` grants everything.

    python -m shared.auth new ops ledger:read events:write   # prints a key and its config entry
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

# The development key, valid only when ARREARS_ENV is dev or test; settings refuse it elsewhere.
DEV_KEY = "dev.arrears-dev-key"


class ApiKeySpec(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(min_length=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def dev_key_spec() -> ApiKeySpec:
    key_id, secret = DEV_KEY.split(".", 1)
    return ApiKeySpec(id=key_id, sha256=digest(secret), scopes=["*"])


@dataclass(frozen=True)
class Principal:
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes


class KeyRing:
    def __init__(self, specs: Iterable[ApiKeySpec]) -> None:
        self._keys = {spec.id: spec for spec in specs}

    def authenticate(self, presented: str | None) -> Principal | None:
        if not presented or "." not in presented:
            return None
        key_id, secret = presented.split(".", 1)
        spec = self._keys.get(key_id)
        # Hash even for an unknown id, so timing does not tell which ids exist.
        candidate = digest(secret)
        expected = spec.sha256 if spec else "0" * 64
        if not hmac.compare_digest(candidate, expected) or spec is None:
            return None
        return Principal(spec.id, frozenset(spec.scopes))


# Declared so that the OpenAPI documents show the scheme; the check itself is ``require``.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An Arrears API key `<key id>.<secret>` (or send it as `X-API-Key`).",
)


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: 401 without a valid key, 403 without ``scope``."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        ring: KeyRing = request.app.state.keyring
        presented = credentials.credentials if credentials else request.headers.get("x-api-key")
        principal = ring.authenticate(presented)
        if principal is None:
            raise HTTPException(
                401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not principal.allows(scope):
            raise HTTPException(403, f"the API key lacks the scope {scope}")
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}"
    return check


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "new":
        print("usage: python -m shared.auth new KEY_ID SCOPE [SCOPE...]", file=sys.stderr)
        return 2
    key_id, scopes = argv[1], argv[2:]
    secret = secrets.token_urlsafe(32)
    spec = ApiKeySpec(id=key_id, sha256=digest(secret), scopes=scopes)
    print(f"key (give it to the client, then forget it): {key_id}.{secret}")
    print(f"config entry for ARREARS_API_KEYS: {json.dumps(spec.model_dump())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
