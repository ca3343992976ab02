"""The AsyncAPI and OpenAPI documents are generated from the code; stale copies fail here."""

from __future__ import annotations

import yaml

from scripts import docs
from shared.events import REGISTRY


def test_committed_contract_documents_match_the_code() -> None:
    stale = [
        str(path.relative_to(docs.ROOT))
        for path, content in docs.rendered().items()
        if not path.exists() or path.read_text() != content
    ]
    assert not stale, f"run `python -m scripts.docs`: {stale}"


def test_asyncapi_lists_every_registered_event_type_on_its_topic() -> None:
    document = yaml.safe_load((docs.DOCS / "asyncapi.yaml").read_text())
    listed = {
        message["name"]: document["channels"][channel_id]["address"]
        for channel_id, channel in document["channels"].items()
        for message in (
            document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            for ref in channel.get("messages", {}).values()
        )
    }
    assert listed == {name: spec.topic for name, spec in REGISTRY.items()}
