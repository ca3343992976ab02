"""Loading compliance packs from their data files (one YAML file per country)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.scheduler.domain.compliance import Pack

PACKS = Path(__file__).resolve().parent.parent / "packs"


def load_packs(folder: Path = PACKS) -> dict[str, Pack]:
    """Every ``<COUNTRY>.yaml`` in ``folder``, validated; a bad file stops the service starting."""
    packs = {}
    for path in sorted(folder.glob("*.yaml")):
        pack = Pack.model_validate(yaml.safe_load(path.read_text()))
        if pack.country != path.stem:
            raise ValueError(f"{path.name}: country {pack.country} does not match the file name")
        packs[pack.country] = pack
    return packs
