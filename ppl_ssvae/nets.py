"""Multi-layer perceptrons whose first layer takes several inputs separately.

A network fed ``(x, y)`` computes its first layer as ``W_x x + W_y y + b``. The
class label y comes in one of two forms, and the layer takes either:

- an integer class index (an exact y: observed, sampled or enumerated, the value of
  a ``Categorical`` site), read as its one-hot vector: ``W_y y`` is then the y-th
  column of ``W_y``, looked up rather than multiplied;
- a point of the simplex (a relaxed y, the value of a ``RelaxedOneHotCategorical``
  site), multiplied as it is.

When Pyro enumerates the K values of y it hands the network the indices
``0..K-1`` in a tensor of shape ``(K, 1)`` next to an ``x`` of shape ``(B, D)``:
the ``x`` part is then computed once, ``(B, H)``, and the ``y`` part, ``(K, 1, H)``,
K looked-up columns, is a broadcast add, so enumeration never copies ``x`` K times.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}
MAXOUT_PIECES = 4

_shared_masks: dict | None = None  # set by ``one_dropout_mask``


@contextlib.contextmanager
def one_dropout_mask() -> Iterator[None]:
    """Inside it, each input-dropout layer draws one mask per input shape and reuses it.

    Sequential enumeration (``enum-seq``) runs the guide once per value of y. Each run
    must drop the same pixels, as parallel enumeration's single run does; otherwise
    q(y | x) is computed K times under K masks, its K weights no longer sum to one, and
    the exact sum becomes a noisier estimator: 7 to 17 times the classifier gradient's
    deviation of parallel enumeration on M2 at K = 10 (``experiments/estimators.py``,
    before this), 50 times on the tests' small networks (``tests/test_elbo.py``).
    """
    global _shared_masks
    outer, _shared_masks = _shared_masks, {} if _shared_masks is None else _shared_masks
    try:
        yield
    finally:
        _shared_masks = outer


class InputDropout(nn.Dropout):
    """``nn.Dropout`` that, inside ``one_dropout_mask``, reuses its mask for an input
    of the same shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _shared_masks is None:
            return super().forward(x)
        key = (id(self), tuple(x.shape), x.device)
        mask = _shared_masks.get(key)
        if mask is None:
            keep = torch.full_like(x, 1.0 - self.p)
            mask = _shared_masks[key] = torch.bernoulli(keep) / (1.0 - self.p)
        return x * mask


class BatchNorm(nn.BatchNorm1d):
    """Batch norm over the last dimension of a tensor with any leading dimensions
    (enumeration adds one in front of the batch)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        return super().forward(h.reshape(-1, shape[-1])).reshape(shape)


class Maxout(nn.Module):
    def __init__(self, pieces: int = MAXOUT_PIECES):
        super().__init__()
        self.pieces = pieces

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unflatten(-1, (-1, self.pieces)).amax(-1)


def linear_or_lookup(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``; for integer class indices ``x``, the same as ``linear`` of their
    one-hot vectors: the columns of the weight they pick (plus the bias)."""
    if x.is_floating_point():
        return linear(x)
    h = linear.weight.t()[x]
    return h if linear.bias is None else h + linear.bias


class SplitInput(nn.Module):
    """``sum_i W_i x_i + b``, each input through its own weight, broadcast together;
    an input of integer class indices stands for their one-hot vectors."""

    def __init__(self, in_sizes: Sequence[int], out_size: int):
        super().__init__()
        self.linears = nn.ModuleList(
            nn.Linear(n, out_size, bias=(i == 0)) for i, n in enumerate(in_sizes)
        )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.linears):
            raise ValueError(f"expected {len(self.linears)} inputs, got {len(inputs)}")
        h = linear_or_lookup(self.linears[0], inputs[0])
        for linear, x in zip(self.linears[1:], inputs[1:], strict=True):
            h = h + linear_or_lookup(linear, x)
        return h


class MLP(nn.Module):
    """``inputs -> [linear -> (batch norm) -> activation] * len(hidden) -> linear``.

    ``in_sizes`` lists the sizes of the separate inputs (``[784]``, or ``[50, 10]``
    for ``(z, y)``: K = 10, the size of a one-hot y, whether y comes as indices or
    not); ``out_sizes`` the sizes of the outputs, returned as a tuple
    when there are several (a mean and a scale, say) or as a tensor when one.
    """

    def __init__(
        self,
        in_sizes: Sequence[int],
        hidden: Sequence[int],
        out_sizes: int | Sequence[int],
        activation: str = "softplus",
        batch_norm: bool = False,
        input_dropout: float = 0.0,
    ):
        super().__init__()
        self.out_sizes = (out_sizes,) if isinstance(out_sizes, int) else tuple(out_sizes)
        self.single_output = isinstance(out_sizes, int)
        if activation != "maxout" and activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of "
                             f"{', '.join([*ACTIVATIONS, 'maxout'])}")
        self.input_dropout = InputDropout(input_dropout) if input_dropout > 0 else None
        widths = list(hidden)
        pieces = MAXOUT_PIECES if activation == "maxout" else 1
        layers: list[nn.Module] = []
        size = sum(self.out_sizes)
        if widths:
            self.first = SplitInput(in_sizes, widths[0] * pieces)
            for i, width in enumerate(widths):
                if i > 0:
                    layers.append(nn.Linear(widths[i - 1], width * pieces))
                if batch_norm:
                    layers.append(BatchNorm(width * pieces))
                layers.append(Maxout(pieces) if pieces > 1 else ACTIVATIONS[activation]())
            layers.append(nn.Linear(widths[-1], size))
        else:
            self.first = SplitInput(in_sizes, size)
        self.rest = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor):
        if self.input_dropout is not None:
            inputs = (self.input_dropout(inputs[0]), *inputs[1:])
        out = self.rest(self.first(*inputs))
        if self.single_output:
            return out
        return out.split(self.out_sizes, dim=-1)


class GaussianHead(nn.Module):
    """An MLP whose two outputs are the mean and the (positive) scale of a diagonal Gaussian."""

    def __init__(self, in_sizes: Sequence[int], hidden: Sequence[int], dim: int, **kwargs):
        super().__init__()
        self.net = MLP(in_sizes, hidden, (dim, dim), **kwargs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(*inputs)
        return loc, F.softplus(raw_scale) + 1e-4
