"""Datasets for tasks: scikit-learn's built-in sets, or a user file pinned by sha256.

Everything here is deterministic so that a verifier rebuilds exactly the batch a miner used:
the train/test split comes from the spec's seed, a miner's shard from its worker index, and
each epoch's batch order from the task id and epoch. The test set is withheld: training code
reads only x_train/y_train; evaluators score on x_test/y_test.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from cachetools import LRUCache

from pouw.ml.dataset_files import DatasetError, DatasetIntegrityError, DatasetSource
from pouw.spec import BUILTIN_DATASETS, DatasetShape, DatasetSpec

__all__ = ["Dataset", "DatasetError", "DatasetIntegrityError", "DatasetSource", "load_dataset"]

BUILTIN_ONLY = DatasetSource()


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_features: int
    num_classes: int
    digest: bytes

    @property
    def shape(self) -> DatasetShape:
        rows = len(self.y_train) + len(self.y_test)
        return DatasetShape(rows, self.num_features, self.num_classes)

    @property
    def nbytes(self) -> int:
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        return sum(t.element_size() * t.nelement() for t in tensors)


MAX_CACHED_BYTES = 1024 * 1024 * 1024
"""Loaded datasets kept in memory at most (the least recently used go first)."""


def dataset_cache(max_bytes: int) -> LRUCache[DatasetSpec, Dataset]:
    """Loaded datasets by spec, at most `max_bytes` of tensors: a file's spec pins its bytes
    by sha256, so any node's copy is the same data."""
    return LRUCache(max_bytes, getsizeof=lambda dataset: dataset.nbytes)


_cache = dataset_cache(MAX_CACHED_BYTES)
_cache_lock = threading.Lock()


def load_dataset(spec: DatasetSpec, source: DatasetSource = BUILTIN_ONLY) -> Dataset:
    """The spec's dataset; a file from `source` (this node's directory or allowed hosts),
    refused unless it has the shape the spec declares."""
    with _cache_lock:
        cached = _cache.get(spec)
    if cached is None:
        x, y, scale_by_16 = _read(spec, source)
        cached = _split(spec, x, y, scale_by_16)
        if spec.format != "builtin":
            _check_declared(spec, cached.shape)
        with _cache_lock, contextlib.suppress(ValueError):  # one larger than the whole cache
            _cache[spec] = cached
    return cached


def _check_declared(spec: DatasetSpec, found: DatasetShape) -> None:
    for field in ("rows", "features", "classes"):
        declared, actual = getattr(spec, field), getattr(found, field)
        if declared != actual:
            raise DatasetError(
                f"dataset {spec.name!r} declares {field}={declared} but the file has {actual}"
            )


def _read(spec: DatasetSpec, source: DatasetSource) -> tuple[np.ndarray, np.ndarray, bool]:
    if spec.format == "builtin":
        if spec.name not in BUILTIN_DATASETS:
            raise DatasetError(f"unknown built-in dataset {spec.name!r}")
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{spec.name}")()
        return (
            np.asarray(bunch.data, dtype=np.float64),
            np.asarray(bunch.target),
            spec.name == "digits",
        )
    raw = source.read(spec)
    x, y = _parse_npz(raw) if spec.format == "npz" else _parse_csv(raw)
    return x, y, False


def _parse_npz(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            x_key = "x" if "x" in archive else "X"
            return np.asarray(archive[x_key], dtype=np.float64), np.asarray(archive["y"])
    except (KeyError, ValueError, OSError) as error:
        raise DatasetError(f"not an npz with arrays x and y: {error}") from None


def _parse_csv(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    lines = raw.decode("utf-8", errors="replace").strip().splitlines()
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]
    try:
        table = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise DatasetError(f"csv is not numeric: {error}") from None
    if table.shape[1] < 2:
        raise DatasetError("csv needs feature columns and a label column")
    return table[:, :-1], table[:, -1]


def _is_numeric_row(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True


def _split(spec: DatasetSpec, x: np.ndarray, y: np.ndarray, scale_by_16: bool) -> Dataset:
    if x.ndim != 2 or len(x) == 0:
        raise DatasetError("features must be a non-empty 2-D array")
    if len(x) != len(y):
        raise DatasetError(f"{len(x)} feature rows but {len(y)} labels")
    if not np.isfinite(x).all():
        raise DatasetError("features hold NaN or infinity")
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise DatasetError("labels must be integers")
    classes, labels = np.unique(y.astype(np.int64), return_inverse=True)
    order = np.random.default_rng(spec.split_seed).permutation(len(x))
    n_test = max(1, round(spec.test_fraction * len(x)))
    if n_test >= len(x):
        raise DatasetError(f"{len(x)} rows leave nothing to train on")
    test, train = order[:n_test], order[n_test:]
    if scale_by_16:
        x = x / 16.0
    else:
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / np.where(std == 0, 1.0, std)
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(labels.astype(np.int64))
    digest = hashlib.sha256()
    for part in (features.numpy().tobytes(), targets.numpy().tobytes(), order.tobytes()):
        digest.update(part)
    return Dataset(
        name=spec.name,
        x_train=features[train],
        y_train=targets[train],
        x_test=features[test],
        y_test=targets[test],
        num_features=features.shape[1],
        num_classes=len(classes),
        digest=digest.digest(),
    )


def shard_indices(n_train: int, worker_index: int, workers: int) -> torch.Tensor:
    """The miner's contiguous share of the training rows; the last takes the remainder."""
    if not 0 <= worker_index < workers:
        raise ValueError(f"worker {worker_index} of {workers}")
    size = n_train // workers
    end = n_train if worker_index == workers - 1 else (worker_index + 1) * size
    return torch.arange(worker_index * size, end, dtype=torch.int64)


def batches_per_epoch(shard_size: int, batch_size: int) -> int:
    return math.ceil(shard_size / batch_size)


_epoch_orders: dict[tuple[bytes, int, int, int], torch.Tensor] = {}


def batch_indices(
    shard: torch.Tensor, batch_size: int, epoch: int, iteration: int, seed: bytes
) -> torch.Tensor:
    """Batch `iteration` of `epoch`: the shard shuffled by a permutation from (seed, epoch)."""
    if not 0 <= iteration < batches_per_epoch(len(shard), batch_size):
        raise IndexError(f"epoch has no batch {iteration}")
    return epoch_order(shard, epoch, seed)[iteration * batch_size : (iteration + 1) * batch_size]


def epoch_order(shard: torch.Tensor, epoch: int, seed: bytes) -> torch.Tensor:
    """The shard's rows in the order the epoch visits them."""
    key = (seed, epoch, int(shard[0]) if len(shard) else 0, len(shard))
    order = _epoch_orders.get(key)
    if order is None:
        if len(_epoch_orders) > 1024:
            _epoch_orders.clear()
        digest = hashlib.sha256(seed + epoch.to_bytes(8, "big")).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
        order = _epoch_orders[key] = shard[torch.randperm(len(shard), generator=generator)]
    return order


def batch_hash(x: torch.Tensor, y: torch.Tensor) -> bytes:
    digest = hashlib.sha256(repr((tuple(x.shape), tuple(y.shape))).encode())
    digest.update(x.contiguous().numpy().data)
    digest.update(y.contiguous().numpy().data)
    return digest.digest()
