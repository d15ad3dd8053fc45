import pytest

from pouw.blockchain import MLTask
from pouw.spec import TaskSpecError


def test_the_seed_example_maps_onto_a_full_spec() -> None:
    spec = MLTask(
        task_id="image_classification_001",
        task_type="image_classification",
        dataset_hash="digits",
        model_requirements={"architecture": "CNN", "min_accuracy": 0.90, "max_epochs": 100},
        reward_amount=50.0,
    ).to_spec()
    assert spec.model.architecture == "cnn" and spec.model.input_shape == (1, 8, 8)
    assert (spec.epochs, spec.min_accuracy, spec.dataset.name) == (100, 0.9, "digits")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (MLTask("t", dataset_hash="0x123abc..."), "neither a built-in dataset"),
        (MLTask("t", model_requirements={"colour": "red"}), "unknown keys"),
        (MLTask("t", model_requirements={"architecture": "RNN"}), "MLP or CNN"),
        (MLTask("t", dataset_hash="iris", model_requirements={"architecture": "CNN"}), "tabular"),
        (MLTask("t", reward_amount=0), "reward_amount"),
        (MLTask("t", model_requirements={"max_epochs": 0}), "epochs"),
    ],
)
def test_what_cannot_be_mapped_is_refused_by_name(task: MLTask, message: str) -> None:
    with pytest.raises(TaskSpecError, match=message):
        task.to_spec()
