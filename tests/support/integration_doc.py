"""The examples of docs/integration.md, by name: the tests run the page as written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+) -->\s*```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)


def examples() -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["lang"], m["body"]) for m in _EXAMPLE.finditer(PAGE.read_text())}


def example(name: str) -> Any:
    """A JSON example parsed, or a Python example's source."""
    lang, body = examples()[name]
    return json.loads(body) if lang == "json" else body
