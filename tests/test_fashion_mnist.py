"""Fashion-MNIST: its sources in order, the SHA-256 check, MNIST's split rule, the
one-line error naming both ways to get it; the real files (Debian's package, which
.ci/run installs) through a tiny comparison run."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest
import torch

from clitools import assert_error, train_cli
from ppl_ssvae import data as data_lib
from ppl_ssvae.data import DataError
from ppl_ssvae.data import fashion_mnist as fashion_lib

real_files = pytest.mark.skipif(
    not all((fashion_lib.DEBIAN_DIR / n).is_file() for n in fashion_lib.SHA256)
    and not os.environ.get("CI"),
    reason="Fashion-MNIST is not installed (CI installs it: apt-get install dataset-fashion-mnist)")


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                   *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Four small IDX files (60 training images, 12 test images), their digests patched
    in; the cache and Debian's directory empty."""
    rng = np.random.default_rng(0)
    directory = tmp_path / "fake"
    directory.mkdir()
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 28, 28)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 10)
    monkeypatch.setattr(fashion_lib, "SHA256",
                        {name: data_lib.sha256(directory / name) for name in fashion_lib.SHA256})
    monkeypatch.setattr(fashion_lib, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PPL_SSVAE_DATA", raising=False)
    return directory


def test_the_idx_files_are_read_with_mnists_split_rule(fake):
    data = data_lib.load("fashion-mnist", str(fake))
    # the last sixth of a small training file is the validation set (10,000 of 60,000)
    assert (len(data.train), len(data.valid), len(data.test)) == (50, 10, 12)
    assert data.name == "fashion-mnist" and data.shape == (28, 28) and data.num_classes == 10
    raw = data_lib.read_idx(fake / "train-images-idx3-ubyte.gz")
    torch.testing.assert_close(data.valid.x[0], torch.from_numpy(raw[50].reshape(-1) / 255.0).float())
    assert data.train.y.tolist() == [i % 10 for i in range(50)]


def test_sources_in_order(fake, tmp_path, monkeypatch):
    # PPL_SSVAE_DATA, its fashion-mnist/ subdirectory
    parent = tmp_path / "data"
    (parent / "fashion-mnist").mkdir(parents=True)
    for name in fashion_lib.SHA256:
        (parent / "fashion-mnist" / name).write_bytes((fake / name).read_bytes())
    monkeypatch.setenv("PPL_SSVAE_DATA", str(parent))
    assert data_lib.load("fashion-mnist").source == str(parent / "fashion-mnist")
    monkeypatch.delenv("PPL_SSVAE_DATA")
    # then the user cache, then Debian's directory
    monkeypatch.setattr(fashion_lib, "DEBIAN_DIR", fake)
    assert data_lib.load("fashion-mnist").source == str(fake)
    cache = data_lib.cache_dir() / "fashion-mnist"
    cache.mkdir(parents=True)
    for name in fashion_lib.SHA256:
        (cache / name).write_bytes((fake / name).read_bytes())
    assert data_lib.load("fashion-mnist").source == str(cache)


def test_a_file_that_fails_its_checksum_is_refused(fake, capsys, tmp_path):
    write_idx(fake / "t10k-labels-idx1-ubyte.gz", np.zeros(12))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-labels"):
        data_lib.load("fashion-mnist", str(fake))
    code, err = train_cli(capsys, "--dataset", "fashion-mnist", "--data-dir", str(fake),
                          "--out", str(tmp_path / "run"))
    assert_error(code, err, "checksum mismatch", "apt-get install dataset-fashion-mnist")


def test_absent_data_names_both_ways_to_get_it(fake, capsys, tmp_path):
    code, err = train_cli(capsys, "--dataset", "fashion-mnist", "--out", str(tmp_path / "run"))
    assert_error(code, err, "no Fashion-MNIST found", "apt-get install dataset-fashion-mnist",
                 "--data-dir")
    code, err = train_cli(capsys, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
                          "--out", str(tmp_path / "run"))
    assert_error(code, err, f"no Fashion-MNIST in {tmp_path}", "apt-get install")


@real_files
def test_the_debian_files_pass_their_checksums_and_split(monkeypatch):
    monkeypatch.delenv("PPL_SSVAE_DATA", raising=False)
    data = data_lib.load_fashion_mnist()
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10_000, 10_000)
    assert set(data.test.y.unique().tolist()) == set(range(10))


@real_files
def test_compare_runs_on_fashion_mnist_into_its_own_results(tmp_path, monkeypatch):
    from experiments import compare

    assert compare.results_dir("fashion-mnist") == compare.RESULTS / "fashion"
    tiny = {"hidden": [16], "z_dim": 4, "batch_size": 100, "labelled_batch_size": 50,
            "eval_batch_size": 2000, "figures": False, "max_steps": 3}
    monkeypatch.setattr(compare, "config_for", lambda model, inference: dict(tiny))
    assert compare.main(["--dataset", "fashion-mnist", "--results", str(tmp_path), "--models",
                         "m2/enum", "mlp/ml", "--seeds", "0", "--epochs", "1"]) == 0
    for directory in ("m2-enum", "mlp-ml"):
        run = tmp_path / "runs" / directory / "seed0"
        config = json.loads((run / "config.json").read_text())
        assert config["dataset"] == "fashion-mnist" and config["data"]["name"] == "fashion-mnist"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    assert "| m2/enum |" in table and "Data set: fashion-mnist." in table
    assert "ExactM2" not in table  # the original's MNIST numbers are not shown
