"""Writes the contract documents from the code, so they cannot drift from it:

- ``docs/asyncapi.yaml``: every topic, its event types with their payload schemas and headers,
  and which service publishes or consumes it;
- ``docs/openapi/<service>.json``: each service's HTTP API.

    python -m scripts.docs          # rewrite them
    python -m scripts.docs --check  # exit 1 if they differ from the code (the tests do this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from shared import topics
from shared.events import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Who writes and who reads each topic (design.md's service table).
PRODUCERS = {
    topics.CORE_BANKING: "core-banking (upstream)",
    topics.LEDGER: "ledger",
    topics.SCHEDULER: "scheduler",
    topics.NOTIFIER: "notifier",
    topics.BUREAU: "bureau",
    topics.CLOCK: "test harness / simulator",
}

HEADERS: dict[str, Any] = {
    "type": "object",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "description": "Unique; consumers deduplicate on it"},
        "ce_source": {"type": "string", "description": "/arrears/<service> or the upstream id"},
        "ce_type": {"type": "string"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "Account id, or customer id"},
        "content-type": {"type": "string", "const": "application/json"},
        "traceparent": {"type": "string", "description": "W3C trace context, when traced"},
    },
}


def consumers_of() -> dict[str, list[str]]:
    from scripts.stack import SERVICES

    readers: dict[str, list[str]] = {}
    for service in SERVICES:
        definition = _runtime(service).definition
        for spec in definition.consumers:
            for topic in spec.topics:
                readers.setdefault(topic, []).append(service)
    readers.setdefault(topics.CLOCK, []).append("every service (ARREARS_CLOCK=controlled)")
    return readers


def _runtime(service: str) -> Any:
    import importlib

    from shared.service import ServiceRuntime

    settings_module = importlib.import_module(f"services.{service}.settings")
    bootstrap = importlib.import_module(f"services.{service}.bootstrap")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    return ServiceRuntime(settings_class(), bootstrap.build)


def asyncapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    readers = consumers_of()
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        schema = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[spec.model.__name__] = schema
        message_id = name.replace(".", "_")
        messages[message_id] = {
            "name": name,
            "title": spec.model.__name__,
            "summary": (spec.model.__doc__ or "").strip().split("\n")[0] or name,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{spec.model.__name__}"},
        }
    schemas["CloudEventHeaders"] = HEADERS
    for topic in topics.ALL_TOPICS:
        channel_id = topic.replace(".", "_").replace("-", "_")
        names = sorted(n for n, s in REGISTRY.items() if s.topic == topic)
        channels[channel_id] = {
            "address": topic,
            "description": (
                f"Key: customer id. Written by {PRODUCERS[topic]}; read by "
                f"{', '.join(readers.get(topic, [])) or 'nobody yet'}."
            ),
            "messages": {
                n.replace(".", "_"): {"$ref": f"#/components/messages/{n.replace('.', '_')}"}
                for n in names
            },
        }
        channels[f"{channel_id}_dlq"] = {
            "address": topics.dlq(topic),
            "description": (
                "Dead letters of the topic: the original key, value and headers, plus "
                "dlq_reason, dlq_kind (invalid | rejected | exhausted), dlq_consumer, "
                "dlq_source_topic, dlq_source_partition, dlq_source_offset and dlq_failed_at."
            ),
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{PRODUCERS[topic]} publishes (through its transactional outbox)",
        }
        for reader in readers.get(topic, []):
            if reader.startswith("every"):
                continue
            operations[f"{reader}_consumes_{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{reader} consumes (inbox deduplication, dead letters on failure)",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Arrears events",
            "version": "0.1.0",
            "description": (
                "CloudEvents 1.0 over Kafka in binary content mode: attributes in ce_* headers, "
                "the JSON data object as the value, the customer id as the key. Money is a "
                "decimal string with an ISO 4217 currency. Generated by `python -m scripts.docs`."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def openapi(service: str) -> dict[str, Any]:
    from shared.service import create_app

    spec: dict[str, Any] = create_app(_runtime(service)).openapi()
    return spec


def rendered() -> dict[Path, str]:
    from scripts.stack import SERVICES

    files = {
        DOCS / "asyncapi.yaml": "# Generated by `python -m scripts.docs`; do not edit.\n"
        + yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=100)
    }
    for service in SERVICES:
        files[DOCS / "openapi" / f"{service}.json"] = (
            json.dumps(openapi(service), indent=2, sort_keys=False) + "\n"
        )
    # The schema strategy files and POST /v1/strategies bodies are validated against.
    from services.scheduler.domain.strategy import schema

    files[DOCS / "strategy.schema.json"] = json.dumps(schema(), indent=2) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, content in rendered().items():
        if path.exists() and path.read_text() == content:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if args.check and stale:
        print("out of date: " + ", ".join(map(str, stale)) + " (run python -m scripts.docs)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
