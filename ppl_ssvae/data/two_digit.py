"""Two-digit MNIST: 100 classes, each image two MNIST digits side by side.

An image is 28 x 56 pixels (1,568 values, flattened row by row): a left digit ``a`` and
a right digit ``b`` from the same MNIST split, its label the number ``10 * a + b``
(00-99). Train, validation and test pairs are composed only from MNIST's own train,
validation and test images respectively, so no validation or test digit is ever seen
in training; each split has as many pairs as its MNIST split has images (50,000 /
10,000 / 10,000).

How a split is composed, with a generator seeded by ``COMPOSITION_SEED`` (fixed, never
``--seed``):

- left: a random permutation of the split, so each image is the left digit of exactly
  one pair;
- right class: within the pairs whose left digit is ``a``, taken in that random order,
  the right class cycles 0, 1, ..., 9, 0, ... from a random offset, so every class
  ``10a + b`` gets ``n_a / 10`` pairs give or take one (450-570 per class in training,
  enough for ``--labels`` up to 45,000);
- right image: the images of class ``b`` in the split, in a random order, each used once
  before any is used again.

The composition (source indices and labels, not the pixels, which are gathered from
MNIST in a second) is cached in ``cache_dir()`` as a small ``.npz``, named by the format
version, the composition seed and a digest of MNIST's labels, on which alone the
composition depends. It pins the data set even if numpy's random streams change, and
records which MNIST image each half came from. A cache that cannot be read or does not
check out is composed again and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ppl_ssvae.data.core import Dataset, Split, cache_dir, checked
from ppl_ssvae.data.mnist import load_mnist
from ppl_ssvae.io import atomic_write

NAME = "two-digit-mnist"
VERSION = 1
COMPOSITION_SEED = 12
NUM_CLASSES = 100
SHAPE = (28, 56)
SPLITS = ("train", "valid", "test")


def labels_digest(mnist: Dataset) -> str:
    """SHA-256 of MNIST's labels, split by split: all the composition depends on."""
    hasher = hashlib.sha256()
    for name in SPLITS:
        y = getattr(mnist, name).y.cpu().numpy().astype(np.int64)
        hasher.update(name.encode() + len(y).to_bytes(8, "little") + y.tobytes())
    return hasher.hexdigest()


def compose(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (left, right) of the pairs of one split with digit labels ``y``."""
    n = len(y)
    left = rng.permutation(n)
    right_class = np.empty(n, dtype=np.int64)
    for a in range(10):
        rows = np.flatnonzero(y[left] == a)  # pairs with left digit a, in random order
        right_class[rows] = (np.arange(len(rows)) + rng.integers(10)) % 10
    right = np.empty(n, dtype=np.int64)
    for b in range(10):
        rows = np.flatnonzero(right_class == b)
        members = rng.permutation(np.flatnonzero(y == b))
        right[rows] = members[np.arange(len(rows)) % len(members)]
    return left.astype(np.int64), right


def composition(mnist: Dataset) -> dict[str, np.ndarray]:
    """``{split}_left``, ``{split}_right`` and ``{split}_y`` for every split."""
    rng = np.random.default_rng(COMPOSITION_SEED)
    arrays = {}
    for name in SPLITS:
        y = getattr(mnist, name).y.cpu().numpy()
        left, right = compose(y, rng)
        arrays.update({f"{name}_left": left, f"{name}_right": right,
                       f"{name}_y": 10 * y[left] + y[right]})
    return arrays


def cache_path(digest: str) -> Path:
    return cache_dir() / f"{NAME}-v{VERSION}-seed{COMPOSITION_SEED}-{digest[:16]}.npz"


def _read_cache(path: Path, mnist: Dataset) -> dict[str, np.ndarray] | None:
    """The cached composition if it is whole and fits ``mnist``, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    for name in SPLITS:
        y = getattr(mnist, name).y.cpu().numpy()
        try:
            left, right, labels = (arrays[f"{name}_{part}"] for part in ("left", "right", "y"))
        except KeyError:
            return None
        if not (left.shape == right.shape == labels.shape == y.shape
                and left.dtype.kind == right.dtype.kind == "i"
                and left.min(initial=0) >= 0 and left.max(initial=0) < len(y)
                and right.min(initial=0) >= 0 and right.max(initial=0) < len(y)
                and np.array_equal(labels, 10 * y[left] + y[right])):
            return None
    return arrays


def load_two_digit_mnist(data_dir: str | os.PathLike | None = None,
                         use_cache: bool = True) -> Dataset:
    """Two-digit MNIST, 100 classes: two MNIST digits side by side (28 x 56), labelled
    with the number they make, composed from MNIST (found as `load_mnist` finds it).

    Args:
        data_dir: where to look for MNIST first.
        use_cache: read the composition (source indices) from the user cache, and write
            it there on the first load.

    Returns:
        The `Dataset`: 50,000 / 10,000 / 10,000 pairs, each split composed from MNIST's
        own split.

    Raises:
        DataError: MNIST cannot be found.
    """
    mnist = load_mnist(data_dir)
    path = cache_path(labels_digest(mnist))
    arrays = _read_cache(path, mnist) if use_cache and path.exists() else None
    if arrays is None:
        arrays = composition(mnist)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **arrays))

    def split(name: str) -> Split:
        source = getattr(mnist, name)
        images = source.x.reshape(-1, 28, 28)
        left = torch.from_numpy(arrays[f"{name}_left"])
        right = torch.from_numpy(arrays[f"{name}_right"])
        x = torch.cat([images[left], images[right]], dim=2).reshape(len(left), -1)
        return Split(x, torch.from_numpy(arrays[f"{name}_y"].astype(np.int64)))

    return checked(Dataset(*(split(name) for name in SPLITS), num_classes=NUM_CLASSES,
                           source=f"{NAME} from {mnist.source}", shape=SHAPE, name=NAME))


def source_indices(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The composition the data set was built from: for each split, the indices into
    that MNIST split of every pair's left and right digit (``train_left`` ...)."""
    mnist = load_mnist(data_dir)
    path = cache_path(labels_digest(mnist))
    arrays = _read_cache(path, mnist) if path.exists() else None
    return arrays if arrays is not None else composition(mnist)
