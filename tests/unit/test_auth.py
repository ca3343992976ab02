from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.ledger.settings import LedgerSettings
from shared.auth import DEV_KEY, ApiKeySpec, KeyRing, digest, main


def ring(*scopes: str) -> KeyRing:
    return KeyRing([ApiKeySpec(id="ops", sha256=digest("s3cret"), scopes=list(scopes))])


def test_a_valid_key_yields_its_scopes() -> None:
    principal = ring("ledger:read").authenticate("ops.s3cret")
    assert principal is not None
    assert principal.allows("ledger:read")
    assert not principal.allows("events:write")


def test_the_wildcard_scope_allows_everything() -> None:
    principal = ring("*").authenticate("ops.s3cret")
    assert principal is not None
    assert principal.allows("bureau:write")


@pytest.mark.parametrize("presented", [None, "", "ops", "ops.wrong", "nobody.s3cret", ".s3cret"])
def test_missing_malformed_wrong_or_unknown_keys_are_refused(presented: str | None) -> None:
    assert ring("*").authenticate(presented) is None


def test_only_the_hash_of_a_secret_is_configured() -> None:
    spec = ApiKeySpec(id="ops", sha256=digest("s3cret"), scopes=["*"])
    assert "s3cret" not in spec.model_dump_json()


def test_new_key_command_prints_a_key_that_its_config_entry_accepts(capsys) -> None:
    assert main(["new", "ops", "ledger:read"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    entry = ApiKeySpec.model_validate_json(out[1].split(": ", 1)[1])
    principal = KeyRing([entry]).authenticate(key)
    assert principal is not None
    assert principal.scopes == {"ledger:read"}


def test_development_key_works_in_dev_only(monkeypatch) -> None:
    monkeypatch.delenv("ARREARS_API_KEYS", raising=False)
    monkeypatch.setenv("ARREARS_ENV", "dev")
    assert KeyRing(LedgerSettings().api_keys).authenticate(DEV_KEY) is not None
    monkeypatch.setenv("ARREARS_ENV", "prod")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql+asyncpg://u:real-secret@db/ledger")
    with pytest.raises(ValidationError, match="ARREARS_API_KEYS must be set"):
        LedgerSettings()
    dev_id, dev_secret = DEV_KEY.split(".", 1)
    monkeypatch.setenv(
        "ARREARS_API_KEYS",
        f'[{{"id": "{dev_id}", "sha256": "{digest(dev_secret)}", "scopes": ["*"]}}]',
    )
    with pytest.raises(ValidationError, match="development API key is refused"):
        LedgerSettings()
    monkeypatch.setenv(
        "ARREARS_API_KEYS", f'[{{"id": "ops", "sha256": "{digest("x" * 40)}", "scopes": ["*"]}}]'
    )
    monkeypatch.setenv("ARREARS_FINGERPRINT_KEY", "a-real-fingerprint-key")
    assert LedgerSettings().api_keys[0].id == "ops"
