"""Random data of MNIST's shape whose classes are learnable, for smoke runs and tests."""

from __future__ import annotations

import torch

from ppl_ssvae.data.core import Dataset, Split


def synthetic(num_train: int = 2000, num_valid: int = 500, num_test: int = 500,
              num_classes: int = 10, dim: int = 784, seed: int = 0) -> Dataset:
    """Random data of MNIST's shape whose classes are learnable, for smoke runs: each class
    has a prototype image of bright pixels, and an example is its prototype with noise.

    Args:
        num_train: training examples.
        num_valid: validation examples.
        num_test: test examples.
        num_classes: K.
        dim: values per example.
        seed: seeds the prototypes and the examples.

    Returns:
        The `Dataset`.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(num_classes, dim, generator=g) < 0.2).float()

    def split(n):
        y = torch.randint(num_classes, (n,), generator=g)
        noise = torch.rand(n, dim, generator=g)
        x = (0.8 * prototypes[y] + 0.2 * noise).clamp(0, 1)
        return Split(x, y)

    shape = (28, 28) if dim == 784 else (dim,)
    return Dataset(split(num_train), split(num_valid), split(num_test), num_classes,
                   "synthetic", shape, "synthetic")
