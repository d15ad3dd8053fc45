from __future__ import annotations

from pathlib import Path

import pytest

from pouw.blockchain.chain import Chain
from tests.support.ledger import ledger_params, open_chain


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return open_chain(tmp_path / "node", ledger_params())
