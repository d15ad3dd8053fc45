"""The seed API's MLTask: a short description of a task, mapped onto the full TaskSpec.

The seed's fields are task_id, task_type, dataset_hash, model_requirements and reward_amount.
What they cannot say (layer sizes, learning rate, ...) comes from the built-in defaults of the
dataset; what cannot be mapped is refused with a message naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pouw.spec import (
    BUILTIN_DATASETS,
    BUILTIN_SHAPES,
    DatasetSpec,
    ModelSpec,
    TaskSpec,
    TaskSpecError,
    check_task_spec,
)

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {"digits": (1, 8, 8)}
"""The built-in sets a CNN can take: (channels, height, width); the others are tabular."""
KNOWN_REQUIREMENTS = {
    "architecture",
    "min_accuracy",
    "max_epochs",
    "epochs",
    "hidden_layers",
    "learning_rate",
    "batch_size",
    "optimizer",
    "miners",
    "dataset_url",
    "dataset_format",
}
SHA256 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


@dataclass
class MLTask:
    task_id: str
    task_type: str = "classification"
    dataset_hash: str = "digits"
    model_requirements: dict[str, Any] = field(default_factory=dict)
    reward_amount: float = 10.0

    def to_spec(self) -> TaskSpec:
        requirements = dict(self.model_requirements)
        unknown = set(requirements) - KNOWN_REQUIREMENTS
        if unknown:
            raise TaskSpecError(
                f"model_requirements has unknown keys {sorted(unknown)}; "
                f"known: {sorted(KNOWN_REQUIREMENTS)}"
            )
        if self.reward_amount <= 0:
            raise TaskSpecError(f"reward_amount={self.reward_amount} must be positive")
        dataset, features, classes, image = self._dataset(requirements)
        architecture = str(requirements.get("architecture", "MLP")).lower()
        if architecture not in ("mlp", "cnn"):
            raise TaskSpecError(f"model_requirements.architecture={architecture!r}: MLP or CNN")
        if architecture == "cnn" and image is None:
            raise TaskSpecError(
                f"model_requirements.architecture='CNN' needs image data; "
                f"{self.dataset_hash!r} is tabular (use MLP)"
            )
        hidden = tuple(int(size) for size in requirements.get("hidden_layers", (128, 64)))
        model = ModelSpec(
            layers=(features, *hidden, classes),
            architecture="cnn" if architecture == "cnn" else "mlp",
            input_shape=image if architecture == "cnn" and image else (),
        )
        try:
            spec = msgspec.convert(
                {
                    "model": msgspec.to_builtins(model),
                    "dataset": msgspec.to_builtins(dataset),
                    "epochs": int(requirements.get("max_epochs", requirements.get("epochs", 20))),
                    "min_accuracy": float(requirements.get("min_accuracy", 0.0)),
                    "learning_rate": float(requirements.get("learning_rate", 0.05)),
                    "batch_size": int(requirements.get("batch_size", 32)),
                    "optimizer": str(requirements.get("optimizer", "sgd")),
                    "miners": int(requirements.get("miners", 1)),
                    "tau": 1e-3,
                },
                TaskSpec,
            )
        except msgspec.ValidationError as error:
            raise TaskSpecError(f"task {self.task_id!r}: {error}") from None
        check_task_spec(spec)
        return spec

    def _dataset(
        self, requirements: dict[str, Any]
    ) -> tuple[DatasetSpec, int, int, tuple[int, int, int] | None]:
        name = self.dataset_hash
        if name in BUILTIN_DATASETS:
            shape = BUILTIN_SHAPES[name]
            return DatasetSpec(name=name), shape.features, shape.classes, IMAGE_SHAPES.get(name)
        if SHA256.match(name) and "dataset_url" in requirements:
            raise TaskSpecError(
                "a user dataset needs its feature and class counts: submit a full task spec "
                "(pouw task submit FILE) instead of an MLTask"
            )
        raise TaskSpecError(
            f"dataset_hash={name!r} is neither a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)}) nor a sha256 with model_requirements.dataset_url"
        )
