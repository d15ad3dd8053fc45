"""The tasks whose training failed on this node, with why, kept in the data dir: a restarted
miner does not pick a task that failed here again, and its status still says why.

One JSON object (task id hex -> reason), rewritten atomically on each failure and pruned on
start to the tasks still open, so it holds at most one line per open task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

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
