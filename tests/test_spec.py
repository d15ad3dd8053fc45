from __future__ import annotations

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
