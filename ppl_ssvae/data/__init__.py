"""Data sets, one module each, behind one ``load(name, ...)`` that returns a ``Dataset``
(train / valid / test splits, ``num_classes``, the shape of one example).

- ``mnist``: MNIST in its classic split 50,000 / 10,000 / 10,000 (``ppl_ssvae.data.mnist``);
- ``fashion-mnist``: Fashion-MNIST, the same split (``ppl_ssvae.data.fashion_mnist``);
- ``two-digit-mnist``: 100 classes, two MNIST digits side by side, 28 x 56
  (``ppl_ssvae.data.two_digit``);
- ``synthetic``: random data of MNIST's shape, for smoke runs;
- ``PATH.npz``: your own data, labels -1 where unknown (``ppl_ssvae.data.npz``).

To add a data set, write a module with a function ``(data_dir, seed) -> Dataset`` and name
it in ``LOADERS``. Everything is held in memory as tensors; a batch is an index tensor
into them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ppl_ssvae.data.core import DataError, Dataset, Split, cache_dir, checked, read_idx, sha256
from ppl_ssvae.data.fashion_mnist import load_fashion_mnist
from ppl_ssvae.data.mnist import load_mnist
from ppl_ssvae.data.npz import load_npz
from ppl_ssvae.data.synthetic import synthetic
from ppl_ssvae.data.two_digit import load_two_digit_mnist

LOADERS: dict[str, Callable[[str | None, int], Dataset]] = {
    "mnist": lambda data_dir, seed: load_mnist(data_dir),
    "fashion-mnist": lambda data_dir, seed: load_fashion_mnist(data_dir),
    "two-digit-mnist": lambda data_dir, seed: load_two_digit_mnist(data_dir),
    "synthetic": lambda data_dir, seed: synthetic(seed=seed),
}


def load(dataset: str = "mnist", data_dir: str | None = None, seed: int = 0) -> Dataset:
    """The data set called ``dataset``, or the ``.npz`` file it names: what
    ``--dataset`` loads.

    Args:
        dataset: a name in `LOADERS` (``mnist``, ``fashion-mnist``, ``two-digit-mnist``,
            ``synthetic``), or the path of a ``.npz`` file of your own data.
        data_dir: where to look first for the files of a named data set
            (``--data-dir``).
        seed: the seed of the ``synthetic`` data.

    Returns:
        The `Dataset`: train, validation and test splits, K and the shape of one example.

    Raises:
        DataError: an unknown name, a malformed file, or data that cannot be found or
            verified; the message says what to do.
    """
    if dataset.endswith(".npz"):
        return load_npz(dataset)
    loader = LOADERS.get(dataset)
    if loader is None and Path(dataset).is_dir():
        raise DataError(f"--dataset {dataset} is a directory: give a .npz file, or one of "
                        f"{', '.join(LOADERS)} with --data-dir {dataset}")
    if loader is None:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(LOADERS)}, or the "
                        f"path of a .npz file")
    return loader(data_dir, seed)


def labelled_indices(data: Dataset, labels: int, seed: int) -> torch.Tensor:
    """The training examples whose labels a run uses: those the data fix (a .npz with
    -1 for unknown labels), else ``labels`` balanced over the classes."""
    if data.labelled is not None:
        return data.labelled
    return balanced_labels(data.train.y, labels, data.num_classes, seed)


def check_range(data: Dataset, unit_range: bool) -> None:
    """Refuse values a likelihood cannot score: outside [0, 1] for the Bernoulli."""
    if not unit_range:
        return
    for name in ("train", "valid", "test"):
        x = getattr(data, name).x
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{data.source}: {name} values lie in [{lo:g}, {hi:g}], and "
                            f"--likelihood bernoulli needs [0, 1]: scale them to [0, 1], or use "
                            f"--likelihood gaussian --no-binarize")


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
           "cache_dir", "check_range", "checked", "labelled_indices", "load",
           "load_fashion_mnist", "load_mnist", "load_npz", "load_two_digit_mnist", "read_idx",
           "sha256", "synthetic"]
