"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 28 x 28 grey images of 10 kinds of
clothing, in the same four IDX files as MNIST and the same split rule (the last
10,000 of the 60,000 training images are the validation set; 50,000 / 10,000 /
10,000).

Sources, in order: ``--data-dir`` or ``PPL_SSVAE_DATA`` (the four files, there or in
its ``fashion-mnist/`` subdirectory), the user cache (``~/.cache/ppl_ssvae/fashion-mnist``),
and where Debian's package ``dataset-fashion-mnist`` installs them
(``/usr/share/datasets/fashion-mnist``). Every file must match its SHA-256 below (the
digests of the files that package ships, the dataset authors' gzip files). Nothing
is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from ppl_ssvae.data.core import DataError, Dataset, cache_dir, sha256
from ppl_ssvae.data.mnist import read_idx_dir

SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = ("install Debian's package (`apt-get install dataset-fashion-mnist`), or put the "
              f"four IDX files ({', '.join(SHA256)}) in a directory and pass --data-dir")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")


def _has_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in SHA256)


def _verified(directory: Path) -> Dataset:
    for name, expected in SHA256.items():
        digest = sha256(directory / name)
        if digest != expected:
            raise DataError(f"checksum mismatch for {directory / name} (SHA-256 {digest[:12]}..., "
                            f"expected {expected[:12]}...): it is not Fashion-MNIST's file; "
                            f"replace it, or {HOW_TO_GET}")
    return read_idx_dir(directory, name="fashion-mnist")


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST in MNIST's split, from the first source that has it: ``data_dir`` or
    ``PPL_SSVAE_DATA`` (the four IDX files, there or in its ``fashion-mnist/``), the user
    cache, and ``/usr/share/datasets/fashion-mnist`` (Debian's package
    ``dataset-fashion-mnist``). Each file must match its SHA-256; nothing is downloaded.

    Args:
        data_dir: a directory holding the IDX files.

    Returns:
        The `Dataset`, pixels in [0, 1].

    Raises:
        DataError: no source has it, or a file fails its checksum; the message names both
            ways to get it.
    """
    explicit = data_dir or os.environ.get("PPL_SSVAE_DATA")
    if explicit:
        directory = Path(explicit)
        named = "--data-dir" if data_dir else "PPL_SSVAE_DATA"  # where the user's fix goes
        if directory.exists() and not directory.is_dir():
            raise DataError(f"{named} {directory} is a file, not a directory: set {named} to "
                            f"the directory that holds Fashion-MNIST's four IDX files")
        for candidate in (directory / "fashion-mnist", directory):
            if _has_files(candidate):
                return _verified(candidate)
        raise DataError(f"no Fashion-MNIST in {directory} (nor in its fashion-mnist/), which "
                        f"{named} names: {HOW_TO_GET}, or unset {named}"
                        if not data_dir else
                        f"no Fashion-MNIST in {directory} (nor in its fashion-mnist/): "
                        f"{HOW_TO_GET}, or drop --data-dir")
    for candidate in (cache_dir() / "fashion-mnist", DEBIAN_DIR):
        if _has_files(candidate):
            return _verified(candidate)
    raise DataError(f"no Fashion-MNIST found: {HOW_TO_GET}")
