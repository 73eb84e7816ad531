"""Label sites: where a model keeps the class of an image.

A model declares the names of its label sites and how a class index becomes their
values and back, as three class attributes (M2's are the defaults)::

    label_sites = ("y",)                               # the sample sites of the label
    def split_label(self, c): return {"y": c}          # a class index -> site values
    def join_label(self, values): return values["y"]   # site values -> the class index

The two-digit model's label is two digits: ``label_sites = ("y1", "y2")``,
``split_label(c) = {"y1": c // 10, "y2": c % 10}``, ``join_label = 10 * y1 + y2``.
Everything shared (evaluation, prediction, sampling, rendering, the figures, the tests)
reads a model's label sites through the functions below, never a site called ``y``.

A class is always given and returned as the number it is (0..K-1, K = ``num_classes``);
only the model knows that it is made of parts.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_SITES = ("y",)


def label_sites(model: nn.Module) -> tuple[str, ...]:
    """The names of ``model``'s label sites, in its plates (``("y",)`` unless it says
    otherwise; empty for a model with no discrete label to infer)."""
    return tuple(getattr(model, "label_sites", DEFAULT_SITES))


def split_label(model: nn.Module, c: torch.Tensor) -> dict[str, torch.Tensor]:
    """The values of ``model``'s label sites for class indices ``c``."""
    split = getattr(model, "split_label", None)
    return split(c) if split is not None else {label_sites(model)[0]: c}


def join_label(model: nn.Module, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """The class indices that the values of ``model``'s label sites stand for."""
    join = getattr(model, "join_label", None)
    return join(values) if join is not None else values[label_sites(model)[0]]


def digits_of(y: torch.Tensor, base: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """A class of ``base * base`` classes as its two digits (tens, units).

    ``y`` is class indices (any shape), or points of the simplex over the classes,
    (..., base * base) (one-hot rows, relaxed labels), whose digits are then the two
    marginals, (..., base) each: exact for one-hot rows, and what a network whose
    first layer is linear in the one-hot digits reads as their expectation."""
    if not y.is_floating_point():
        return torch.div(y, base, rounding_mode="floor"), y % base
    grid = y.unflatten(-1, (base, base))
    return grid.sum(-1), grid.sum(-2)
