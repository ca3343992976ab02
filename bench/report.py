"""How every benchmark reports: a table on stdout and the same numbers in bench/results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    print(f"\n{name} benchmark")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")
