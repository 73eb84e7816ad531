"""A training batch: some unlabelled images, some labelled ones, and the sizes of
the sets they were drawn from, so that plates can scale them to the full data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.contrib.autoname import scope
from torch.nn import functional as F

UNLABELLED, LABELLED = "unlabelled", "labelled"
TENSOR_FIELDS = ("x_u", "x_l", "y_l", "idx_u", "idx_l")


@dataclass
class Part:
    """One plate's worth of data, as `Batch.in_plates` yields it.

    Attributes:
        name: the plate's name, ``"unlabelled"`` or ``"labelled"``.
        x: the images, (B, D).
        y: their labels, or ``None`` where they are unobserved (y is then latent).
        size: the size of the set the part stands for.
        index: the indices drawn, if known.
        weight: a multiplier of this set's terms, beyond the plate's N / B.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor | None
    size: int
    index: torch.Tensor | None
    weight: float = 1.0  # a multiplier of this set's terms, beyond the plate's N / B

    def plate(self) -> pyro.plate:
        """The plate over this part; its scale ``size / len(x)`` makes the batch an
        unbiased estimate of the sum over the whole set."""
        subsample = self.index
        if subsample is None:
            subsample = torch.arange(len(self.x), device=self.x.device)
        return pyro.plate(self.name, self.size, subsample=subsample, dim=-1)


@dataclass
class Batch:
    """The argument of every model and guide: unlabelled and labelled images of one step.

    Either part may be absent. ``batch.in_plates()`` enters each part into its plate, so
    that one step is an unbiased estimate of the objective over the whole data set.

    Attributes:
        x_u: unlabelled images, (B, D) or (B, *shape).
        x_l: labelled images.
        y_l: their labels, integer class indices of shape (B,) (one-hot rows, (B, K), are
            accepted and turned into indices): the value of the ``Categorical`` site y.
        n_u: the size of the unlabelled set the batch stands for (default: the batch itself).
        n_l: the same for the labelled set.
        idx_u: the indices of the unlabelled images drawn, if known.
        idx_l: the same for the labelled images.
        labelled_weight: multiplies every term of the labelled part
            (``--labelled-weight``); the classifier's term is the objective's, not scaled.

    Example:
        ```python
        batch = Batch(x_u=x[:100], x_l=x[100:110], y_l=y[100:110], n_u=50_000, n_l=100)
        loss = pair.loss(batch)          # the objective per image
        ```
    """

    x_u: torch.Tensor | None = None
    x_l: torch.Tensor | None = None
    y_l: torch.Tensor | None = None
    n_u: int | None = None
    n_l: int | None = None
    idx_u: torch.Tensor | None = None
    idx_l: torch.Tensor | None = None
    labelled_weight: float = 1.0

    def __post_init__(self):
        if (self.x_l is None) != (self.y_l is None):
            raise ValueError("labelled images x_l and labels y_l come together")
        if self.y_l is not None:
            self.y_l = class_indices(self.y_l)

    def parts(self) -> Iterator[Part]:
        if self.x_u is not None:
            yield Part(UNLABELLED, self.x_u, None, self.n_u or len(self.x_u), self.idx_u)
        if self.x_l is not None:
            yield Part(LABELLED, self.x_l, self.y_l, self.n_l or len(self.x_l), self.idx_l,
                       self.labelled_weight)

    def apart(self) -> list[Batch]:
        """One batch per part present: the unlabelled images, then the labelled ones."""
        batches = []
        if self.x_u is not None:
            batches.append(Batch(x_u=self.x_u, n_u=self.n_u, idx_u=self.idx_u))
        if self.x_l is not None:
            batches.append(Batch(x_l=self.x_l, y_l=self.y_l, n_l=self.n_l, idx_l=self.idx_l,
                                 labelled_weight=self.labelled_weight))
        return batches

    def in_plates(self) -> Iterator[Part]:
        """Each part, entered into its plate and its name scope: the loop of every
        ``forward``. Sample statements made for a part are per-image (batched along
        the plate, scaled to the whole set) and named ``unlabelled/...`` or
        ``labelled/...``::

            for part in batch.in_plates():
                self.story(part.x, part.y)
        """
        for part in self.parts():
            weighed = poutine.scale(scale=part.weight) if part.weight != 1.0 else contextlib.nullcontext()
            with part.plate(), weighed, scope(prefix=part.name):
                yield part

    def as_arguments(self) -> tuple[tuple[torch.Tensor, ...], dict]:
        """The batch as tensors and static keywords, the form Pyro's JIT ELBOs take
        (they trace tensor arguments and key the compiled function on the keywords):
        ``Batch.from_arguments(*tensors, **static)`` rebuilds it. The sizes are static
        because the plates' scales N / B become constants of the trace."""
        present = tuple(f for f in TENSOR_FIELDS if getattr(self, f) is not None)
        tensors = tuple(getattr(self, f) for f in present)
        return tensors, {"present": present, "sizes": tuple(len(t) for t in tensors),
                         "n_u": self.n_u, "n_l": self.n_l, "labelled_weight": self.labelled_weight}

    @classmethod
    def from_arguments(cls, *tensors: torch.Tensor, present: tuple[str, ...],
                       sizes: tuple[int, ...], n_u: int | None, n_l: int | None,
                       labelled_weight: float = 1.0) -> Batch:
        return cls(**dict(zip(present, tensors, strict=True)), n_u=n_u, n_l=n_l,
                   labelled_weight=labelled_weight)

    @property
    def size(self) -> int:
        """How many examples the batch stands for: the divisor of a per-image loss."""
        return sum(part.size for part in self.parts())


def flat_images(x: torch.Tensor, x_dim: int | None = None) -> torch.Tensor:
    """Images as rows, (B, x_dim): (B, 28, 28) (or (B, 1, 28, 28)) is flattened, and a
    shape that cannot hold x_dim pixels per image is refused in one line."""
    if x.dim() > 2 and (x_dim is None or x.shape[1:].numel() == x_dim):
        x = x.flatten(1)
    if x.dim() != 2 or (x_dim is not None and x.shape[1] != x_dim):
        want = f"(B, {x_dim})" if x_dim else "(B, D)"
        raise ValueError(f"images must have shape {want}, or (B, 28, 28) for 784 pixels; got "
                         f"{tuple(x.shape)}")
    return x


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The one-hot rows of class indices.

    Args:
        y: integer class indices, any shape.
        num_classes: K.

    Returns:
        A float tensor of shape (..., K).
    """
    return F.one_hot(y, num_classes).to(torch.get_default_dtype())


def class_indices(y: torch.Tensor) -> torch.Tensor:
    """Labels as int64 class indices of shape (B,); one-hot rows (B, K) are converted."""
    if y.dim() == 2 and y.is_floating_point():
        if not bool(((y == 0) | (y == 1)).all() and (y.sum(-1) == 1).all()):
            raise ValueError("labels y_l of shape (B, K) must be one-hot rows; or give class "
                             "indices of shape (B,)")
        return y.argmax(-1)
    if y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"labels y_l must be integer class indices of shape (B,), got "
                         f"{tuple(y.shape)} {y.dtype}")
    return y.long()
