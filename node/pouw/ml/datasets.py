"""Datasets for tasks: scikit-learn's built-in sets, or a user file pinned by sha256.

Everything here is deterministic so that a verifier rebuilds exactly the batch a miner used:
the train/test split comes from the spec's seed, a miner's shard from its worker index, and
each epoch's batch order from the task id and epoch. The test set is withheld: training code
reads only x_train/y_train; evaluators score on x_test/y_test.
"""

from __future__ import annotations

import hashlib
import io
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pouw.errors import PouwError
from pouw.spec import BUILTIN_DATASETS, DatasetSpec

MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 60


class DatasetError(PouwError, ValueError):
    pass


class DatasetIntegrityError(DatasetError):
    pass


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


_cache: dict[DatasetSpec, Dataset] = {}


def load_dataset(spec: DatasetSpec, *, cache_dir: Path | None = None) -> Dataset:
    cached = _cache.get(spec)
    if cached is None:
        x, y, scale_by_16 = _read(spec, cache_dir)
        cached = _cache[spec] = _split(spec, x, y, scale_by_16)
    return cached


def _read(spec: DatasetSpec, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, bool]:
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
    if spec.sha256 is None:
        raise DatasetError("a dataset file needs its sha256 in the task spec")
    raw = _fetch(spec.url or spec.name, cache_dir)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != spec.sha256:
        raise DatasetIntegrityError(
            f"dataset {spec.name!r} has sha256 {actual}, the task spec pins {spec.sha256}"
        )
    x, y = _parse_npz(raw) if spec.format == "npz" else _parse_csv(raw)
    return x, y, False


def _fetch(location: str, cache_dir: Path | None) -> bytes:
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(location, timeout=DOWNLOAD_TIMEOUT_S) as response:
            raw: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
        if len(raw) > MAX_DOWNLOAD_BYTES:
            raise DatasetError(f"{location} is larger than {MAX_DOWNLOAD_BYTES} bytes")
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / hashlib.sha256(location.encode()).hexdigest()).write_bytes(raw)
        return raw
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else location)
    try:
        if path.stat().st_size > MAX_DOWNLOAD_BYTES:
            raise DatasetError(f"{path} is larger than {MAX_DOWNLOAD_BYTES} bytes")
        return path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read dataset {location}: {error.strerror}") from None


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
