"""The full specification of an ML task, as paid for by a PAY_FOR_TASK transaction."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta

from pouw.errors import PouwError


@dataclass(frozen=True)
class DatasetShape:
    """What a model must fit: rows (before the split), features per row, distinct labels."""

    rows: int
    features: int
    classes: int


BUILTIN_SHAPES: dict[str, DatasetShape] = {
    "digits": DatasetShape(rows=1797, features=64, classes=10),
    "iris": DatasetShape(rows=150, features=4, classes=3),
    "wine": DatasetShape(rows=178, features=13, classes=3),
    "breast_cancer": DatasetShape(rows=569, features=30, classes=2),
}
"""scikit-learn's sets as `pouw.ml.datasets` loads them (tests/ml/test_datasets.py checks
the table against the loaders): validating a spec never loads a dataset."""
BUILTIN_DATASETS = tuple(BUILTIN_SHAPES)
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
"""A dataset file's name in the node's dataset directory: no separator, no leading dot."""
DEFAULT_FEE = 0.01
"""Coins a task's payment pays its miner when the client names no fee."""
MAX_MODEL_PARAMETERS = 16 * 1024 * 1024
"""Every block carries the model its iteration started from: 64 MiB of float32 parameters is
the default chain's checkpoint limit (`ChainParams.max_checkpoint_bytes`)."""

PositiveInt = Annotated[int, Meta(ge=1, le=2**31)]
Count = Annotated[int, Meta(ge=0, le=2**31)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
HexDigest = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
Aggregator = Literal["robust", "screened_mean", "median", "trimmed_mean", "krum", "mean"]
"""How miners combine their peers' updates (pouw.ml.aggregation): every one but mean behind the
anomaly screen (pouw.security.Defence); robust is the one with per-round bounds; mean is the
unprotected average."""
AGGREGATORS: tuple[str, ...] = get_args(Aggregator)
DEFAULT_AGGREGATOR: Aggregator = "robust"


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An MLP (`layers` = sizes from input to output) or a small CNN over `input_shape`."""

    layers: Annotated[tuple[PositiveInt, ...], Meta(min_length=2, max_length=16)]
    architecture: Literal["mlp", "cnn"] = "mlp"
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"
    input_shape: Annotated[tuple[PositiveInt, ...], Meta(max_length=3)] = ()


class DatasetSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A built-in scikit-learn dataset by name, or a user file pinned by sha256: by its name in
    each node's dataset directory, or fetched from `url` (an allowed host only). A file declares
    its shape (`rows`, `features`, `classes`), checked when it loads; for a built-in set they
    may be left 0."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]
    format: Literal["builtin", "npz", "csv"] = "builtin"
    url: Annotated[str, Meta(max_length=2048)] = ""
    sha256: HexDigest | None = None
    test_fraction: Annotated[float, Meta(gt=0.0, lt=1.0)] = 0.2
    split_seed: Annotated[int, Meta(ge=0, le=2**32)] = 0
    rows: Count = 0
    features: Count = 0
    classes: Count = 0


class TaskSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: ModelSpec
    dataset: DatasetSpec
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: Annotated[float, Meta(gt=0.0, le=10.0)] = 0.1
    batch_size: PositiveInt = 100
    epochs: Annotated[int, Meta(ge=1, le=10_000)] = 10
    tau: Annotated[float, Meta(ge=0.0)] = 0.0
    min_accuracy: Probability = 0.0
    miners: Annotated[int, Meta(ge=1, le=64)] = 3
    aggregator: Aggregator = DEFAULT_AGGREGATOR


class TaskSpecError(PouwError, ValueError):
    pass


def task_spec_from_mapping(data: object) -> TaskSpec:
    """Build a TaskSpec from parsed YAML/JSON, with an error naming the offending field."""
    try:
        spec = msgspec.convert(data, TaskSpec)
    except msgspec.ValidationError as error:
        raise TaskSpecError(f"invalid task spec: {error}") from None
    check_task_spec(spec)
    return spec


def check_task_spec(spec: TaskSpec) -> None:
    """Rules that cross fields, which a schema alone cannot express."""
    shape = dataset_shape(spec.dataset)
    if spec.model.architecture == "cnn" and len(spec.model.input_shape) != 3:
        raise TaskSpecError("model.input_shape must be (channels, height, width) for a cnn")
    parameters = model_parameters(spec.model)
    if parameters > MAX_MODEL_PARAMETERS:
        raise TaskSpecError(
            f"model.layers make {parameters:,} parameters, over the {MAX_MODEL_PARAMETERS:,} "
            "a block can carry"
        )
    check_model_fits(spec.model, spec.dataset.name, shape)


def dataset_shape(dataset: DatasetSpec) -> DatasetShape:
    """The dataset's shape as the spec fixes it: the table's for a built-in set, else the
    declared one. Raises TaskSpecError naming the field that is wrong."""
    declared = DatasetShape(dataset.rows, dataset.features, dataset.classes)
    if dataset.format == "builtin":
        known = BUILTIN_SHAPES.get(dataset.name)
        if known is None:
            raise TaskSpecError(
                f"dataset.name={dataset.name!r} is not a built-in dataset "
                f"(one of {', '.join(BUILTIN_DATASETS)}); for a file set format to npz or csv"
            )
        for field in ("rows", "features", "classes"):
            if getattr(declared, field) not in (0, getattr(known, field)):
                raise TaskSpecError(
                    f"dataset.{field}={getattr(declared, field)} but {dataset.name} has "
                    f"{getattr(known, field)}"
                )
        return known
    if dataset.sha256 is None:
        raise TaskSpecError("dataset.sha256 is required for a user dataset file")
    if not FILE_NAME.fullmatch(dataset.name):
        raise TaskSpecError(
            f"dataset.name={dataset.name!r} is not a file name in the dataset directory "
            "(letters, digits, '.', '_', '-'; no path, no leading dot)"
        )
    if dataset.url and not _is_web_url(dataset.url):
        raise TaskSpecError(
            "dataset.url must be an http or https URL; a node's own file is named by "
            "dataset.name in its dataset directory"
        )
    for field in ("rows", "features", "classes"):
        if getattr(declared, field) < 1:
            raise TaskSpecError(f"dataset.{field} must be declared (>= 1) for a dataset file")
    return declared


def check_model_fits(model: ModelSpec, dataset: str, shape: DatasetShape) -> None:
    """The model consumes a row of the dataset and outputs one score per class."""
    if model.architecture == "cnn":
        values = math.prod(model.input_shape)
        if values != shape.features:
            raise TaskSpecError(
                f"model.input_shape {list(model.input_shape)} holds {values} values but "
                f"dataset {dataset!r} has {shape.features} features"
            )
    elif model.layers[0] != shape.features:
        raise TaskSpecError(
            f"model.layers[0]={model.layers[0]} but dataset {dataset!r} has "
            f"{shape.features} features"
        )
    if model.layers[-1] != shape.classes:
        raise TaskSpecError(
            f"model.layers[-1]={model.layers[-1]} but dataset {dataset!r} has "
            f"{shape.classes} classes"
        )


def _is_web_url(url: str) -> bool:
    try:
        parsed = urllib.parse.urlsplit(url)
        return parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:
        return False


def model_parameters(model: ModelSpec) -> int:
    """How many parameters `pouw.ml.models.build_model` makes of `model`, without building it."""
    if model.architecture == "mlp":
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in pairwise(model.layers))
    channels, height, width = model.input_shape
    total, previous = 0, channels
    for width_out in model.layers[:-1]:
        total += previous * width_out * 9 + width_out
        previous = width_out
    return total + previous * height * width * model.layers[-1] + model.layers[-1]
