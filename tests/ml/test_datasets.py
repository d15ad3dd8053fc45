from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pouw.ml import datasets
from pouw.ml.datasets import (
    DatasetError,
    DatasetIntegrityError,
    DatasetSource,
    batch_hash,
    batch_indices,
    batches_per_epoch,
    load_dataset,
    shard_indices,
)
from pouw.spec import BUILTIN_SHAPES, DatasetSpec


@pytest.mark.parametrize(
    ("name", "features", "classes"),
    [("digits", 64, 10), ("iris", 4, 3), ("wine", 13, 3), ("breast_cancer", 30, 2)],
)
def test_builtin_datasets_load_and_split(name: str, features: int, classes: int) -> None:
    data = load_dataset(DatasetSpec(name=name))
    assert data.num_features == features and data.num_classes == classes
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    total = len(data.y_train) + len(data.y_test)
    assert len(data.y_test) == round(0.2 * total)
    assert data.digest == load_dataset(DatasetSpec(name=name, split_seed=0)).digest
    assert data.digest != load_dataset(DatasetSpec(name=name, split_seed=1)).digest


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_the_shape_table_specs_are_checked_against_is_the_loaders(name: str) -> None:
    assert load_dataset(DatasetSpec(name=name)).shape == BUILTIN_SHAPES[name]


def test_loaded_datasets_are_kept_within_a_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    digits = load_dataset(DatasetSpec(name="digits"))
    bound = digits.nbytes + 1  # room for digits, or for the small sets, never both
    monkeypatch.setattr(datasets, "_cache", datasets.dataset_cache(bound))
    for name in ("digits", "iris", "wine", "breast_cancer", "digits"):
        load_dataset(DatasetSpec(name=name, split_seed=7))
        assert 0 < datasets._cache.currsize <= bound


def write_npz(path: Path) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(40, 3)), y=np.repeat([3, 7], 20))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_spec(name: str, digest: str | None, **fields: Any) -> DatasetSpec:
    shape = {"rows": 40, "features": 3, "classes": 2, **fields}
    fmt = "csv" if name.endswith(".csv") else "npz"
    return DatasetSpec(name=name, format=fmt, sha256=digest, **shape)


def test_an_npz_by_its_name_in_the_dataset_directory(tmp_path: Path) -> None:
    digest = write_npz(tmp_path / "data.npz")
    data = load_dataset(file_spec("data.npz", digest), DatasetSource(tmp_path))
    assert data.num_classes == 2 and set(data.y_train.tolist()) <= {0, 1}
    assert len(data.y_train) + len(data.y_test) == 40


def test_a_file_is_refused_unless_it_has_the_declared_shape(tmp_path: Path) -> None:
    digest = write_npz(tmp_path / "shaped.npz")
    for field, value, actual in (("rows", 41, 40), ("features", 4, 3), ("classes", 3, 2)):
        spec = file_spec("shaped.npz", digest, **{field: value})
        with pytest.raises(
            DatasetError, match=f"declares {field}={value} but the file has {actual}"
        ):
            load_dataset(spec, DatasetSource(tmp_path))


def test_csv_with_a_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    rows = ["a,b,label"] + [f"{i},{i * 2},{i % 3}" for i in range(30)]
    path.write_text("\n".join(rows))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = file_spec("data.csv", digest, rows=30, features=2, classes=3)
    data = load_dataset(spec, DatasetSource(tmp_path))
    assert data.num_features == 2 and data.num_classes == 3


def test_wrong_sha256_is_refused_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"this is not an npz file")
    with pytest.raises(DatasetIntegrityError, match="pins"):
        load_dataset(file_spec("bad.npz", "0" * 64), DatasetSource(tmp_path))


def test_a_file_without_sha256_is_refused(tmp_path: Path) -> None:
    write_npz(tmp_path / "x.npz")
    with pytest.raises(DatasetError, match="sha256"):
        load_dataset(file_spec("x.npz", None), DatasetSource(tmp_path))


def test_a_node_without_a_dataset_directory_reads_no_file(tmp_path: Path) -> None:
    digest = write_npz(tmp_path / "nowhere.npz")
    with pytest.raises(DatasetError, match="no dataset directory"):
        load_dataset(file_spec("nowhere.npz", digest))


def test_nan_features_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.npz"
    np.savez(path, x=np.array([[1.0], [np.nan], [2.0]]), y=np.array([0, 1, 0]))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = file_spec("nan.npz", digest, rows=3, features=1, classes=2)
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(spec, DatasetSource(tmp_path))


def test_shards_partition_the_training_rows() -> None:
    shards = [shard_indices(103, i, 4) for i in range(4)]
    assert torch.equal(torch.cat(shards), torch.arange(103))


def test_batches_cover_the_shard_once_per_epoch_and_are_reproducible() -> None:
    shard = shard_indices(103, 1, 2)
    n = batches_per_epoch(len(shard), 10)
    epoch0 = torch.cat([batch_indices(shard, 10, 0, i, b"task") for i in range(n)])
    assert sorted(epoch0.tolist()) == shard.tolist()
    assert torch.equal(
        batch_indices(shard, 10, 0, 2, b"task"), batch_indices(shard, 10, 0, 2, b"task")
    )
    assert not torch.equal(
        batch_indices(shard, 10, 1, 2, b"task"), batch_indices(shard, 10, 0, 2, b"task")
    )
    assert not torch.equal(
        batch_indices(shard, 10, 0, 2, b"other"), batch_indices(shard, 10, 0, 2, b"task")
    )
    with pytest.raises(IndexError):
        batch_indices(shard, 10, 0, n, b"task")


def test_batch_hash_changes_with_any_value() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    changed = x.clone()
    changed[2, 1] = 1e-7
    assert batch_hash(x, y) == batch_hash(x.clone(), y.clone())
    assert batch_hash(changed, y) != batch_hash(x, y)
