"""The TASK_RESULTs this node's evaluator signed, kept in the data dir until the chain holds
them. One dropped from the mempool unmined is sent again as it was, also after a restart, and
never scored again into another ranking: two different results for one task from one evaluator
are slashing evidence (`pouw.blockchain.slashing`)."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from pouw.blockchain.transactions import TaskResult
from pouw.crypto import canonical_bytes

log = logging.getLogger(__name__)

_decoder = msgspec.msgpack.Decoder(TaskResult)


class SentResults:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, task_id: bytes) -> Path:
        return self.directory / f"{task_id.hex()}.result"

    def get(self, task_id: bytes) -> TaskResult | None:
        try:
            return _decoder.decode(self._path(task_id).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("sent result of task %s unreadable: %s", task_id.hex()[:16], error)
            return None

    def put(self, result: TaskResult) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(result.task_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(canonical_bytes(result))
        temporary.replace(path)

    def discard(self, task_id: bytes) -> None:
        self._path(task_id).unlink(missing_ok=True)
