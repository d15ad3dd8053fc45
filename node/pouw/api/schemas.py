"""Request bodies of the HTTP API (pydantic): bad input becomes a 422 naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pouw.roles import NodeRole


class ModelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[int] = Field(min_length=2, max_length=16)
    architecture: Literal["mlp", "cnn"] = "mlp"
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"
    input_shape: list[int] = Field(default_factory=list, max_length=3)

    @field_validator("layers", "input_shape")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("sizes must be positive")
        return sizes


class DatasetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=256)
    format: Literal["builtin", "npz", "csv"] = "builtin"
    url: str = Field(default="", max_length=2048)
    sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0, le=2**32)


class TaskBody(BaseModel):
    """A task spec (DESIGN.md section 1) and what the client pays for it."""

    model_config = ConfigDict(extra="forbid")
    model: ModelBody
    dataset: DatasetBody
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    batch_size: int = Field(default=100, ge=1, le=2**31)
    epochs: int = Field(default=10, ge=1, le=10_000)
    tau: float = Field(default=0.0, ge=0.0)
    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    miners: int = Field(default=3, ge=1, le=64)
    aggregator: Literal["median", "trimmed_mean", "krum", "mean"] = "median"
    reward: float = Field(gt=0.0, le=1e12)
    fee: float = Field(default=0.01, ge=0.0, le=1e12)
    request_id: str | None = Field(default=None, min_length=1, max_length=253)

    def spec_mapping(self) -> dict[str, Any]:
        return self.model_dump(exclude={"reward", "fee", "request_id"})


class StakeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float = Field(gt=0.0, le=1e12)
    role: NodeRole | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value


class Created(BaseModel):
    task_id: str
