"""Data sets, one module each, behind one ``load(name, ...)`` that returns a ``Dataset``
(train / valid / test splits, ``num_classes``, the shape of one example).

- ``mnist``: MNIST in its classic split 50,000 / 10,000 / 10,000 (``ppl_ssvae.data.mnist``);
- ``two-digit-mnist``: 100 classes, two MNIST digits side by side, 28 x 56
  (``ppl_ssvae.data.two_digit``);
- ``synthetic``: random data of MNIST's shape, for smoke runs.

To add a data set, write a module with a function ``(data_dir, seed) -> Dataset`` and name
it in ``LOADERS``. Everything is held in memory as tensors; a batch is an index tensor
into them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppl_ssvae.data.core import DataError, Dataset, Split, cache_dir, checked, read_idx, sha256
from ppl_ssvae.data.mnist import load_mnist
from ppl_ssvae.data.synthetic import synthetic
from ppl_ssvae.data.two_digit import load_two_digit_mnist

LOADERS: dict[str, Callable[[str | None, int], Dataset]] = {
    "mnist": lambda data_dir, seed: load_mnist(data_dir),
    "two-digit-mnist": lambda data_dir, seed: load_two_digit_mnist(data_dir),
    "synthetic": lambda data_dir, seed: synthetic(seed=seed),
}


def load(dataset: str = "mnist", data_dir: str | None = None, seed: int = 0) -> Dataset:
    """The data set called ``dataset`` (see ``LOADERS``)."""
    loader = LOADERS.get(dataset)
    if loader is None:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(LOADERS)}")
    return loader(data_dir, seed)


def balanced_labels(y: torch.Tensor, labels: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``labels // num_classes`` examples of every class, fixed by ``seed``."""
    if labels <= 0 or labels % num_classes:
        raise DataError(f"--labels must be a positive multiple of the {num_classes} classes, "
                        f"got {labels}")
    if labels > len(y):
        raise DataError(f"--labels {labels} is more than the {len(y)} training images: use "
                        f"fewer labels")
    per_class = labels // num_classes
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for k in range(num_classes):
        members = torch.nonzero(y.cpu() == k).flatten()
        if len(members) < per_class:
            raise DataError(f"--labels {labels} asks for {per_class} examples of class {k}, "
                            f"the training set has {len(members)}: use fewer labels")
        chosen.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: each pixel becomes 1 with probability equal to its intensity."""
    noise = torch.rand(x.shape, generator=generator, device=x.device)
    return (noise < x).to(x.dtype)


__all__ = ["DataError", "Dataset", "LOADERS", "Split", "balanced_labels", "binarize",
           "cache_dir", "checked", "load", "load_mnist", "load_two_digit_mnist", "read_idx", "sha256",
           "synthetic"]
