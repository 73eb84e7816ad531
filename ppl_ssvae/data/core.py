"""What every data set shares: the ``Dataset`` of three splits, the error that says what
to do, file digests, the IDX reader, the checks every split passes, and the cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(Exception):
    """Data that cannot be found, verified or used; the message says what to do."""


@dataclass
class Split:
    """Examples and their labels, in memory.

    Attributes:
        x: (N, D) float32; images are flattened row by row.
        y: (N,) int64 class indices; -1 where unknown (training split only).
    """

    x: torch.Tensor  # (N, D) float32; images are flattened row by row
    y: torch.Tensor  # (N,) int64 class index; -1 where unknown (training split only)

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: str | torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """Train, validation and test splits. Models take ``x_dim`` and ``num_classes`` from
    here, never from a constant.

    Attributes:
        train: the training split; its labels are -1 where unknown.
        valid: the validation split.
        test: the test split.
        num_classes: K.
        source: where the data were read from.
        shape: the shape of one example before flattening ((28, 28) for MNIST, (D,) for
            feature vectors), which the figures use.
        name: the data set's name.
        labelled: indices into ``train`` of the examples whose labels training may use,
            when the data fix them (a ``.npz`` with -1 for unknown labels); ``None``:
            ``--labels`` picks a balanced subset.
    """

    train: Split
    valid: Split
    test: Split
    num_classes: int = 10
    source: str = ""
    shape: tuple[int, ...] = (28, 28)
    name: str = "mnist"
    # indices into train of the examples whose labels training may use, when the data
    # fix them (a .npz with -1 for unlabelled); None: --labels picks a balanced subset
    labelled: torch.Tensor | None = None

    @property
    def x_dim(self) -> int:
        return int(self.train.x.shape[1])

    def to(self, device: str | torch.device) -> Dataset:
        return Dataset(self.train.to(device), self.valid.to(device), self.test.to(device),
                       self.num_classes, self.source, self.shape, self.name, self.labelled)


def sha256(path: Path) -> str:
    return digest(path, hashlib.sha256())


def digest(path: Path, hasher) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzip-compressed), as a numpy array of its shape."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt compressed stream
        raise DataError(f"{path} is not a readable .gz file ({e}): replace it") from None
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file: replace it")
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if ndim == 0:
        raise DataError(f"{path} is an IDX file of no dimensions, not an array: replace it with "
                        f"the file of that name")
    if dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (type code {dtype_code:#04x}): "
                        f"replace it with the file of that name")
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: delete it and fetch it again")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: delete it and fetch it again")
    return array.reshape(shape)


def checked(data: Dataset) -> Dataset:
    """Refuse splits that are empty, mismatched, out of [0, 1] or labelled outside 0..K-1."""
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if len(split.x) != len(split.y):
            raise DataError(f"{data.source}: {name} has {len(split.x)} images but "
                            f"{len(split.y)} labels")
        if len(split.x) == 0:
            raise DataError(f"{data.source}: the {name} split is empty: use the complete files")
        lo, hi = float(split.x.min()), float(split.x.max())
        if lo < 0.0 or hi > 1.0 or not np.isfinite(lo + hi):
            raise DataError(f"{data.source}: {name} pixels must lie in [0, 1], found "
                            f"[{lo:g}, {hi:g}]; scale them to [0, 1]")
        if int(split.y.min()) < 0 or int(split.y.max()) >= data.num_classes:
            raise DataError(f"{data.source}: {name} labels must lie in 0..{data.num_classes - 1}")
    return data


def cache_dir(create: bool = False) -> Path:
    """``$XDG_CACHE_HOME/ppl_ssvae`` or ``~/.cache/ppl_ssvae``; with ``create``, made if
    need be, a ``DataError`` saying which variable to fix if it cannot be."""
    variable = "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "HOME"
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(root) / "ppl_ssvae"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the cache directory {path} ({e.strerror or e}; set "
                            f"{variable} to a writable directory)") from None
    return path
