"""Rejections carry a short machine-readable reason (a metric label) and a human detail."""

from __future__ import annotations


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidTransaction(Rejected):
    pass


class InvalidBlock(Rejected):
    def __init__(self, reason: str, detail: str = "", height: int | None = None) -> None:
        super().__init__(reason, detail)
        self.height = height

    def __str__(self) -> str:
        where = f" at height {self.height}" if self.height is not None else ""
        return f"invalid block{where}: {super().__str__()}"


class ReorgTooDeep(Rejected):
    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(
            "reorg_too_deep", f"a reorg of {depth} blocks exceeds the limit of {limit}"
        )
        self.depth = depth
        self.limit = limit


class MalformedData(ValueError):
    """Bytes from outside that do not decode to the expected structure."""
