"""The tasks whose training failed on this node, with why, kept in the data dir: a restarted
miner does not pick a task that failed here again, and its status still says why. The miner
also leaves such a task on chain (WITHDRAW_FROM_TASK, `leave_task`), so every node shows why,
and the client has its escrow back once no drawn miner stays.

One JSON object (task id hex -> reason), rewritten atomically on each failure and pruned on
start to the tasks still open, so it holds at most one line per open task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from pouw.blockchain.transactions import WithdrawFromTask
from pouw.crypto import KeyPair
from pouw.errors import InvalidTransaction
from pouw.node.ledger import Ledger

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 256
"""What a WITHDRAW_FROM_TASK's reason holds (`ShortText`)."""

FILE_NAME = "failed-tasks.json"


class TrainingFailures:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reasons: dict[str, str] = self._load()

    def _load(self) -> dict[str, str]:
        try:
            loaded = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("%s unreadable, starting without it: %s", self.path, error)
            return {}
        if not isinstance(loaded, dict):
            return {}
        return {
            task: str(why)
            for task, why in loaded.items()
            if isinstance(task, str) and len(task) == 64 and _is_hex(task)
        }

    def record(self, task_id: bytes, why: str) -> None:
        self._reasons[task_id.hex()] = why
        self._save()

    def reasons(self) -> dict[bytes, str]:
        return {bytes.fromhex(task): why for task, why in self._reasons.items()}

    def keep_only(self, open_tasks: Iterable[bytes]) -> None:
        """Forget the failures of tasks that are no longer open."""
        keep = {task.hex() for task in open_tasks}
        if not self._reasons.keys() <= keep:
            self._reasons = {t: why for t, why in self._reasons.items() if t in keep}
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._reasons, sort_keys=True))
        temporary.replace(self.path)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def leave_task(ledger: Ledger, key: KeyPair, task_id: bytes, why: str) -> None:
    """Withdraw `key` from the open task on chain, saying why, unless it left already or its
    withdrawal waits in the mempool."""
    record = ledger.chain.state.tasks.get(task_id)
    if record is None or record.status != "open" or key.address in record.withdrawn():
        return
    if any(
        tx.sender == key.public_key
        and isinstance(tx.payload, WithdrawFromTask)
        and tx.payload.task_id == task_id
        for tx in ledger.mempool.transactions()
    ):
        return
    try:
        ledger.submit(WithdrawFromTask(task_id, why[:MAX_REASON_CHARS]))
    except InvalidTransaction as error:
        log.warning("could not leave task %s on chain: %s", task_id.hex()[:16], error)
