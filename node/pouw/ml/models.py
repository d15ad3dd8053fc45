"""Models built from a task's ModelSpec, moved as safetensors (never pickle)."""

from __future__ import annotations

import hashlib
import itertools
import math

import safetensors.torch
import torch
from torch import nn

from pouw.errors import PouwError
from pouw.spec import ModelSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}

MAX_MODEL_BYTES = 64 * 1024 * 1024


class CorruptModel(PouwError, ValueError):
    """A model blob that is not a safetensors file of the expected parameters."""


def build_model(spec: ModelSpec, seed: bytes) -> nn.Module:
    """The task's initial model: every miner who builds it from the same seed gets the same
    weights."""
    with torch.device("meta"):
        model = _mlp(spec) if spec.architecture == "mlp" else _cnn(spec)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(
        int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") >> 1
    )
    _initialise(model, generator)
    return model


def _initialise(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for weights and biases),
    drawn from the task's own generator: the process-wide one is shared by every thread, so
    miners in one process would race for it and build different models."""
    with torch.no_grad():
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if not isinstance(module, nn.Linear | nn.Conv2d):
                raise TypeError(f"no seeded initialisation for {type(module).__name__}")
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            for parameter in own:
                parameter.uniform_(-bound, bound, generator=generator)


def _mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    sizes = spec.layers
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[spec.activation]())
    return nn.Sequential(*layers)


def _cnn(spec: ModelSpec) -> nn.Module:
    """3x3 same-padding convolutions over `input_shape`, then a linear classifier; inputs
    arrive flattened and are unflattened first."""
    channels, height, width = spec.input_shape
    layers: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))]
    previous = channels
    for width_out in spec.layers[:-1]:
        layers += [nn.Conv2d(previous, width_out, 3, padding=1), ACTIVATIONS[spec.activation]()]
        previous = width_out
    layers += [nn.Flatten(), nn.Linear(previous * height * width, spec.layers[-1])]
    return nn.Sequential(*layers)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_to_bytes(model: nn.Module) -> bytes:
    return state_to_bytes(model.state_dict())


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's tensors (a memcpy, far cheaper than serialising them)."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({name: t.detach().contiguous() for name, t in state.items()})


def load_model_bytes(model: nn.Module, data: bytes) -> None:
    """Load a safetensors blob into `model`, refusing anything but its exact parameters."""
    load_model_state(model, read_safetensors(data))


def read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    if len(data) > MAX_MODEL_BYTES:
        raise CorruptModel(f"model blob of {len(data)} bytes exceeds {MAX_MODEL_BYTES}")
    try:
        return safetensors.torch.load(data)
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CorruptModel(f"not a safetensors blob: {error}") from None


def load_model_state(model: nn.Module, loaded: dict[str, torch.Tensor]) -> None:
    """Make `loaded` the parameters of `model`, refusing anything but its exact parameters."""
    expected = model.state_dict()
    if loaded.keys() != expected.keys():
        raise CorruptModel("model blob holds other parameters than the task's model")
    for name, tensor in expected.items():
        found = loaded[name]
        if found.shape != tensor.shape or found.dtype != tensor.dtype:
            raise CorruptModel(f"parameter {name} has shape {tuple(found.shape)}, {found.dtype}")
    # The loaded tensors become the parameters (no second copy). Non-finite weights need no
    # scan of their own: they make the re-run's loss non-finite, which no honest block has.
    model.load_state_dict(loaded, assign=True)


def model_hash(model: nn.Module) -> bytes:
    """SHA-256 over every parameter: costly for large models, used at checkpoints only."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.digest()
