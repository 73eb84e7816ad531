"""Your own data set, as one ``.npz`` file (``numpy.savez``), with scikit-learn's
convention for labels.

Arrays in the file:

- ``x``: the examples, shape (N, D) (feature vectors) or (N, H, W) (images), of an
  integer or floating dtype, every value finite;
- ``y``: N integers, a class in 0..K-1, or -1 where the label is unknown;
- optional ``x_valid`` and ``y_valid``, ``x_test`` and ``y_test``: held-out labelled
  examples (no -1), shaped as ``x``.

K is one more than the largest label; every class 0..K-1 needs at least one labelled
example in ``y``. Where ``x_valid`` (or ``x_test``) is absent, a split of the labelled
examples of ``x`` stands in: of each class's n labels, max(1, round(n / 10)) go to
validation (and as many to test), drawn with the fixed seed ``SPLIT_SEED`` (the same
split for every run, whatever its ``--seed``); each class must keep one for training.
Those examples leave the training set.

Which labels training uses: if ``y`` marks some examples -1, exactly the examples with
a label (``--labels`` is not used); if every example is labelled, ``--labels`` picks a
balanced subset as for MNIST, and the rest are used without their labels.

The range of ``x`` is checked when training starts, against the likelihood: [0, 1]
for ``--likelihood bernoulli``; any finite value for ``gaussian``.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from ppl_ssvae.data.core import DataError, Dataset, Split

SPLIT_SEED = 0
HOLD_OUT = 0.1  # of each class's labels, to validation and again to test, when not given
ARRAYS = ("x", "y", "x_valid", "y_valid", "x_test", "y_test")


def _examples(path: Path, name: str, x: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating)
                                   or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: {name} must hold numbers (an integer or float dtype), got "
                        f"dtype {x.dtype}")
    if x.ndim not in (2, 3) or len(x) == 0 or 0 in x.shape[1:]:
        raise DataError(f"{path}: {name} must have shape (N, D) or (N, H, W) with N, D, H, W > 0, "
                        f"got {x.shape}")
    if shape is not None and x.shape[1:] != shape:
        raise DataError(f"{path}: {name} has examples of shape {x.shape[1:]}, x has {shape}: "
                        f"give them the same shape")
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: {name} holds NaN or infinite values (first in example "
                        f"{int(np.argmin(finite))}): remove or impute them")
    largest = float(np.finfo(np.float32).max)
    if np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize > 4:
        beyond = (np.abs(x.reshape(len(x), -1)) > largest).any(axis=1)
        if beyond.any():
            raise DataError(f"{path}: {name} holds values beyond float32's range (±{largest:.3g}; "
                            f"first in example {int(np.argmax(beyond))}), which training computes "
                            f"in: rescale them")
    return x


def _labels(path: Path, name: str, y: np.ndarray, n: int, x_name: str, unlabelled: bool
            ) -> np.ndarray:
    if y.ndim != 1 or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {name} must be a vector of integers (a class 0..K-1"
                        f"{', or -1 for unlabelled' if unlabelled else ''}), got dtype {y.dtype} "
                        f"shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{path}: {x_name} has {n} examples but {name} has {len(y)} labels: give "
                        f"one label per example")
    lowest = -1 if unlabelled else 0
    if len(y) and int(y.min()) < lowest:
        raise DataError(f"{path}: {name} holds {int(y.min())}; labels must be a class 0..K-1"
                        f"{' or -1 for unlabelled' if unlabelled else ' (no -1 in held-out sets)'}")
    return y.astype(np.int64)


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # what numpy.savez writes: a zip archive
NPY_MAGIC = b"\x93NUMPY"  # what numpy.save writes
DEFLATE_MAX_RATIO = 1100  # deflate expands at most ~1032-fold: a bound on a member's size


def _begins_with(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(6)
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}): check its permissions") from None


def _check_file(path: Path, what: str = ".npz file") -> None:
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a {what}: give the path of the file")
    if not path.is_file():
        raise DataError(f"{path} does not exist: give the path of your {what}")


def _array_size(header_of, name: str, path: Path) -> tuple[tuple[int, ...], int]:
    """The shape an .npy header claims and the bytes it asks for; object arrays refused."""
    version = np.lib.format.read_magic(header_of)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(header_of)
    if dtype.hasobject:
        raise DataError(f"{path}: {name} holds Python objects, which are not loaded (that could "
                        f"run code): save numbers, numpy.savez(path, x=..., y=...)")
    return shape, math.prod(shape) * dtype.itemsize


def read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, its size checked against the file before it is read."""
    _check_file(path, ".npy file")
    if _begins_with(path) != NPY_MAGIC:
        raise DataError(f"{path} is not a .npy file (it does not begin as numpy.save writes "
                        f"one): save the examples with numpy.save(path, x)")
    try:
        with open(path, "rb") as f:
            shape, size = _array_size(f, "the array", path)
            room = path.stat().st_size - f.tell()
        if size > room:
            raise DataError(f"{path} claims an array of shape {shape} ({size:,} bytes) but holds "
                            f"{room:,} bytes: it is truncated or damaged; save it again")
        return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is not a readable .npy file ({reason}): save it with "
                        f"numpy.save(path, x)") from None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path``, never unpickling anything, and never asking for more memory
    than the file can hold (a header claiming a huge shape is refused first)."""
    _check_file(path)
    start = _begins_with(path)
    if start == NPY_MAGIC:
        raise DataError(f"{path} holds a single array (a .npy file), not named arrays: save "
                        f"them with numpy.savez(path, x=..., y=...)")
    if start[:4] not in ZIP_MAGIC:
        raise DataError(f"{path} is not a .npz file (numpy.savez writes a zip archive, and this "
                        f"file is not one): save it with numpy.savez(path, x=..., y=...)")
    try:
        disk = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                name = member.filename[:-4]
                with archive.open(member) as f:
                    shape, size = _array_size(f, name, path)
                room = min(member.file_size, disk if member.compress_type == zipfile.ZIP_STORED
                           else DEFLATE_MAX_RATIO * min(member.compress_size, disk))
                if size > room:
                    raise DataError(f"{path}: {name} claims shape {shape} ({size:,} bytes), more "
                                    f"than the file holds: it is damaged; save it again with "
                                    f"numpy.savez")
        with np.load(path, allow_pickle=False) as f:
            return {name: np.asarray(f[name]) for name in f.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is not a readable .npz file ({reason}): save it with "
                        f"numpy.savez(path, x=..., y=...)") from None


def _hold_out(y: np.ndarray, num_classes: int, g: torch.Generator, path: Path, what: str
              ) -> np.ndarray:
    """Indices of max(1, round(n * HOLD_OUT)) labelled examples of each class."""
    chosen = []
    for k in range(num_classes):
        members = np.flatnonzero(y == k)
        take = max(1, round(len(members) * HOLD_OUT))
        if len(members) - take < 1:
            raise DataError(f"{path}: class {k} has {len(members)} labelled examples left, too "
                            f"few to hold one out for {what} and keep one for training: give "
                            f"x_{what}/y_{what} in the file, or more labels")
        order = torch.randperm(len(members), generator=g).numpy()
        chosen.append(members[order[:take]])
    return np.sort(np.concatenate(chosen))


def load_npz(path: str | Path) -> Dataset:
    """Your own data, from one ``.npz`` file: ``x`` (N, D) or (N, H, W); ``y``, a class
    0..K-1 or -1 where the label is unknown; optionally ``x_valid``/``y_valid`` and
    ``x_test``/``y_test``, labelled. Without them, of each class's labels a tenth (at
    least one) is held out for validation and as many for test.

    Args:
        path: the ``.npz`` file.

    Returns:
        The `Dataset`; its ``labelled`` holds the training examples whose labels are known.

    Raises:
        DataError: a malformed file (missing arrays, wrong dtypes, NaN, lengths that
            differ, labels outside 0..K-1 and -1, a class without labels, too few to hold
            some out), in one line.
    """
    path = Path(path)
    arrays = read_arrays(path)
    unknown = sorted(set(arrays) - set(ARRAYS))
    if unknown:
        raise DataError(f"{path}: unexpected array {unknown[0]!r}; the arrays are "
                        f"{', '.join(ARRAYS)}")
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(f"{path} has no array {name!r} (it has {', '.join(arrays) or 'none'}): "
                            f"save the examples as x and the labels as y (-1 for unlabelled)")
    for split in ("valid", "test"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise DataError(f"{path}: x_{split} and y_{split} come together: give both or neither")

    x = _examples(path, "x", arrays["x"], None)
    y = _labels(path, "y", arrays["y"], len(x), "x", unlabelled=True)
    held = {}
    for split in ("valid", "test"):
        if f"x_{split}" in arrays:
            xs = _examples(path, f"x_{split}", arrays[f"x_{split}"], x.shape[1:])
            held[split] = (xs, _labels(path, f"y_{split}", arrays[f"y_{split}"], len(xs),
                                       f"x_{split}", unlabelled=False))
    num_classes = 1 + max(int(labels.max()) for labels in [y, *(v[1] for v in held.values())])
    if num_classes < 2:
        raise DataError(f"{path}: y needs labels of at least two classes (0 and 1), found "
                        f"{num_classes}")
    # found without a count per class: a label of 10^12 must not ask for 8 TB
    present = np.unique(y[y >= 0])
    if len(present) != num_classes:
        gaps = np.flatnonzero(present != np.arange(len(present)))
        missing = int(gaps[0]) if len(gaps) else len(present)
        raise DataError(f"{path}: class {missing} has no labelled example in y; every class "
                        f"0..{num_classes - 1} needs one: label one or renumber the classes")

    fully_labelled = bool((y >= 0).all())
    keep = np.ones(len(x), dtype=bool)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    for split in ("valid", "test"):
        if split not in held:
            labelled_left = np.where(keep, y, -1)
            idx = _hold_out(labelled_left, num_classes, g, path, split)
            held[split] = (x[idx], y[idx])
            keep[idx] = False
    x_train, y_train = x[keep], y[keep]

    def as_split(xs: np.ndarray, ys: np.ndarray) -> Split:
        flat = np.ascontiguousarray(xs.reshape(len(xs), -1), dtype=np.float32)
        return Split(torch.from_numpy(flat), torch.from_numpy(ys))

    labelled = None if fully_labelled else torch.from_numpy(np.flatnonzero(y_train >= 0))
    return Dataset(as_split(x_train, y_train), as_split(*held["valid"]), as_split(*held["test"]),
                   num_classes, str(path), tuple(int(s) for s in x.shape[1:]), path.stem,
                   labelled)
