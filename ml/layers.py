"""The layer plan of a network: pure arithmetic, shared by the parameter count and the builder.

A spec becomes a `NetworkPlan` (lists of `Conv` and `Dense` layers with their shapes) without
torch; `ml.networks` turns the same plan into modules, so the count can never disagree with the
network that trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Conv:
    """A valid (unpadded), stride-1 convolution, then the activation, then optional max pooling."""

    in_channels: int
    out_channels: int
    kernel_size: int
    activation: str
    pool: int | None = None

    @property
    def params(self) -> int:
        return self.out_channels * self.in_channels * self.kernel_size**2 + self.out_channels


@dataclass(frozen=True)
class Dense:
    """A fully connected layer; `activation` None for an output layer."""

    in_features: int
    out_features: int
    activation: str | None

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + self.out_features


Layer = Conv | Dense


@dataclass(frozen=True)
class Stack:
    """A sequence of layers and the shape it produces: (C, H, W) after convolutions or (F,)."""

    layers: tuple[Layer, ...]
    output_shape: tuple[int, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)


@dataclass(frozen=True)
class NetworkPlan:
    """A network: a shared trunk, then one head per output.

    Outputs are the dataset's targets, or `mu` and `log_var` for gaussian_nll (then the trunk is
    empty and each head is a whole network: the μ network and the σ network)."""

    input_shape: tuple[int, ...]
    trunk: Stack
    heads: dict[str, Stack] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return self.trunk.params + sum(h.params for h in self.heads.values())


class PlanError(ValueError):
    """An architecture that cannot be built; `field` names the offending spec field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def conv_stack(
    shape: tuple[int, ...],
    conv_layers: int,
    filters: int,
    kernel_size: int,
    activation: str,
    pool: int | None,
    where: str,
) -> Stack:
    """`conv_layers` convolutions on a (C, H, W) input, checking that every kernel fits."""
    layers: list[Layer] = []
    if conv_layers and len(shape) != 3:
        raise PlanError("type", f"convolutions need an image input (C, H, W), but {where} receives {_fmt(shape)}")
    for i in range(conv_layers):
        c, h, w = shape
        if kernel_size > min(h, w):
            raise PlanError(
                "kernel_size",
                f"kernel_size {kernel_size} is larger than the {h}x{w} input that reaches convolution "
                f"{i + 1} of {where}; at most {min(h, w)}",
            )
        h, w = h - kernel_size + 1, w - kernel_size + 1
        if pool:
            if pool > min(h, w):
                raise PlanError(
                    "pool",
                    f"pool {pool} is larger than the {h}x{w} output of convolution {i + 1} of {where}; at most "
                    f"{min(h, w)}",
                )
            h, w = h // pool, w // pool
        layers.append(Conv(c, filters, kernel_size, activation, pool))
        shape = (filters, h, w)
    return Stack(tuple(layers), shape)


def dense_stack(shape: tuple[int, ...], widths: list[int], activation: str) -> Stack:
    """Dense hidden layers on any input (an image is flattened first)."""
    features = _flat(shape)
    layers: list[Layer] = []
    for width in widths:
        layers.append(Dense(features, width, activation))
        features = width
    return Stack(tuple(layers), (features,))


def join(*stacks: Stack) -> Stack:
    layers: tuple[Layer, ...] = ()
    for s in stacks:
        layers += s.layers
    return Stack(layers, stacks[-1].output_shape)


def with_output(stack: Stack, outputs: int) -> Stack:
    """The stack followed by its output layer (no activation: logits, values or log σ²)."""
    features = _flat(stack.output_shape)
    return Stack(stack.layers + (Dense(features, outputs, None),), (outputs,))


def split(stack: Stack, k: int, input_shape: tuple[int, ...]) -> tuple[Stack, Stack]:
    """The first k layers (the shared trunk) and the rest."""
    first, rest = stack.layers[:k], stack.layers[k:]
    shape = input_shape
    for layer in first:
        shape = _shape_after(layer, shape)
    return Stack(first, shape), Stack(rest, stack.output_shape)


def _shape_after(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, Dense):
        return (layer.out_features,)
    _, h, w = shape
    h, w = h - layer.kernel_size + 1, w - layer.kernel_size + 1
    if layer.pool:
        h, w = h // layer.pool, w // layer.pool
    return (layer.out_channels, h, w)


def _flat(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _fmt(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} features" if len(shape) == 1 else "x".join(map(str, shape))
