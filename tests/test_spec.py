from __future__ import annotations

import msgspec
import pytest

from pouw.ml.models import build_model, parameter_count
from pouw.spec import (
    MAX_MODEL_PARAMETERS,
    DatasetSpec,
    ModelSpec,
    TaskSpec,
    TaskSpecError,
    check_task_spec,
    model_parameters,
)


@pytest.mark.parametrize(
    "model",
    [
        ModelSpec(layers=(64, 128, 64, 10)),
        ModelSpec(layers=(4, 3)),
        ModelSpec(layers=(4, 8, 3), activation="tanh"),
        ModelSpec(layers=(8, 16, 10), architecture="cnn", input_shape=(1, 8, 8)),
        ModelSpec(layers=(5, 2), architecture="cnn", input_shape=(3, 4, 6)),
    ],
    ids=["digits-mlp", "linear", "tanh-mlp", "cnn", "rgb-cnn"],
)
def test_the_parameter_count_is_the_built_models(model: ModelSpec) -> None:
    assert model_parameters(model) == parameter_count(build_model(model, seed=b"count"))


def test_a_model_no_block_could_carry_is_refused_before_anyone_builds_it() -> None:
    wide = ModelSpec(layers=(64, 4096, 4096, 10))
    assert model_parameters(wide) > MAX_MODEL_PARAMETERS
    with pytest.raises(TaskSpecError, match=r"model.layers make 17,088,522 parameters, over"):
        check_task_spec(TaskSpec(model=wide, dataset=DatasetSpec(name="digits")))


def test_the_largest_model_allowed_passes() -> None:
    # 64 -> n -> 10 has 75n + 10 parameters.
    largest = ModelSpec(layers=(64, (MAX_MODEL_PARAMETERS - 10) // 75, 10))
    assert MAX_MODEL_PARAMETERS - 75 < model_parameters(largest) <= MAX_MODEL_PARAMETERS
    check_task_spec(TaskSpec(model=largest, dataset=DatasetSpec(name="digits")))


IRIS = DatasetSpec(name="iris")
FILE = DatasetSpec(
    name="cells.npz", format="npz", sha256="0" * 64, rows=500, features=16, classes=4
)


@pytest.mark.parametrize(
    ("model", "dataset", "refusal"),
    [
        (ModelSpec(layers=(64, 10)), IRIS, "model.layers[0]=64 but dataset 'iris' has 4 features"),
        (
            ModelSpec(layers=(4, 16, 10)),
            IRIS,
            "model.layers[-1]=10 but dataset 'iris' has 3 classes",
        ),
        (
            ModelSpec(layers=(8, 10), architecture="cnn", input_shape=(1, 8, 9)),
            DatasetSpec(name="digits"),
            "model.input_shape [1, 8, 9] holds 72 values but dataset 'digits' has 64 features",
        ),
        (ModelSpec(layers=(15, 4)), FILE, "model.layers[0]=15 but dataset 'cells.npz' has 16"),
        (ModelSpec(layers=(16, 3)), FILE, "model.layers[-1]=3 but dataset 'cells.npz' has 4"),
    ],
    ids=["iris-64-10", "iris-classes", "cnn-shape", "file-features", "file-classes"],
)
def test_a_model_that_cannot_consume_its_dataset_is_refused(
    model: ModelSpec, dataset: DatasetSpec, refusal: str
) -> None:
    with pytest.raises(TaskSpecError) as caught:
        check_task_spec(TaskSpec(model=model, dataset=dataset))
    assert refusal in str(caught.value)


@pytest.mark.parametrize(
    ("model", "dataset"),
    [
        (ModelSpec(layers=(4, 8, 3)), IRIS),
        (ModelSpec(layers=(30, 2)), DatasetSpec(name="breast_cancer", rows=569, classes=2)),
        (
            ModelSpec(layers=(8, 10), architecture="cnn", input_shape=(1, 8, 8)),
            DatasetSpec(name="digits"),
        ),
        (ModelSpec(layers=(16, 32, 4)), FILE),
    ],
    ids=["iris", "declared-as-the-table", "cnn", "file"],
)
def test_a_model_that_fits_its_dataset_passes(model: ModelSpec, dataset: DatasetSpec) -> None:
    check_task_spec(TaskSpec(model=model, dataset=dataset))


@pytest.mark.parametrize(
    ("dataset", "refusal"),
    [
        (DatasetSpec(name="iris", rows=151), "dataset.rows=151 but iris has 150"),
        (msgspec.structs.replace(FILE, rows=0), "dataset.rows must be declared"),
        (msgspec.structs.replace(FILE, classes=0), "dataset.classes must be declared"),
        (msgspec.structs.replace(FILE, name="../x.npz"), "is not a file name"),
        (msgspec.structs.replace(FILE, name="/dev/zero"), "is not a file name"),
        (msgspec.structs.replace(FILE, name=".hidden"), "is not a file name"),
        (msgspec.structs.replace(FILE, url="/etc/passwd"), "must be an http or https URL"),
        (msgspec.structs.replace(FILE, url="file:///etc/passwd"), "must be an http or https URL"),
        (msgspec.structs.replace(FILE, url="https://"), "must be an http or https URL"),
        (msgspec.structs.replace(FILE, sha256=None), "dataset.sha256 is required"),
    ],
    ids=[
        "builtin-rows",
        "no-rows",
        "no-classes",
        "dotdot",
        "device",
        "hidden",
        "path-url",
        "file-url",
        "no-host",
        "no-sha256",
    ],
)
def test_a_dataset_named_outside_the_rules_is_refused(dataset: DatasetSpec, refusal: str) -> None:
    model = ModelSpec(layers=(16, 4)) if dataset.format != "builtin" else ModelSpec(layers=(4, 3))
    with pytest.raises(TaskSpecError) as caught:
        check_task_spec(TaskSpec(model=model, dataset=dataset))
    assert refusal in str(caught.value)


def test_a_web_dataset_passes_the_spec_rules() -> None:
    web = msgspec.structs.replace(FILE, url="https://data.example.org/cells.npz")
    check_task_spec(TaskSpec(model=ModelSpec(layers=(16, 4)), dataset=web))
