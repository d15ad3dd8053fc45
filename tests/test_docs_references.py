"""Every test the documents name as the one that attacks a rule exists: a renamed or deleted
test would leave a rule the docs call tested with nothing testing it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("docs/security.md", "docs/protocol.md", "ARCHITECTURE.md")
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        found += [(document, path, name) for path, name in REFERENCE.findall(text)]
    return sorted(set(found), key=lambda ref: (ref[0], ref[1], ref[2] or ""))


def test_the_documents_name_tests() -> None:
    assert len(references()) > 20


@pytest.mark.parametrize(("document", "path", "name"), references())
def test_every_named_test_exists(document: str, path: str, name: str) -> None:
    source = ROOT / path
    assert source.is_file(), f"{document} names {path}, which does not exist"
    if name:
        assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.M), (
            f"{document} names {path}::{name}, which is not defined there"
        )
