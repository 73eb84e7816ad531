"""The user's own data as a .npz file: what is read, the split rule, which labels
training uses, the Gaussian likelihood for real values, and every malformed file
refused in one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from clitools import FAST, assert_error, train_cli
from ppl_ssvae import load_run
from ppl_ssvae.cli import main
from ppl_ssvae.data import DataError, labelled_indices, load, load_npz
from ppl_ssvae.data.npz import SPLIT_SEED


def blobs(n=300, k=3, d=6, labels_per_class=8, seed=0, scale=1.0, shift=0.0):
    """k separated Gaussian blobs in d dimensions; all but ``labels_per_class`` labels
    of each class set to -1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    centres = rng.normal(size=(k, d)) * 3
    x = (centres[y] + rng.normal(size=(n, d))) * scale + shift
    partial = np.full(n, -1)
    for c in range(k):
        chosen = rng.choice(np.flatnonzero(y == c), labels_per_class, replace=False)
        partial[chosen] = c
    return x.astype(np.float32), partial, y


def test_unlabelled_examples_stay_and_the_labelled_ones_are_split_by_a_fixed_rule(tmp_path):
    x, y, _ = blobs(labels_per_class=20)
    np.savez(tmp_path / "d.npz", x=x.reshape(-1, 2, 3), y=y)
    data = load(str(tmp_path / "d.npz"))
    assert data.num_classes == 3 and data.shape == (2, 3) and data.x_dim == 6
    # of 20 labels per class, 2 to validation and 2 to test; they leave the training set
    assert len(data.valid) == len(data.test) == 6
    assert torch.bincount(data.valid.y, minlength=3).tolist() == [2, 2, 2]
    assert len(data.train) == 300 - 12
    assert int((data.train.y == -1).sum()) == 300 - 60
    # training uses exactly the examples with a label, whatever --labels says
    idx = labelled_indices(data, labels=100, seed=5)
    assert torch.equal(idx, torch.nonzero(data.train.y >= 0).flatten()) and len(idx) == 48
    # the split does not move with the run's seed
    again = load(str(tmp_path / "d.npz"), seed=7)
    assert torch.equal(again.test.x, data.test.x) and SPLIT_SEED == 0
    held = {tuple(row) for row in np.concatenate([data.valid.x.numpy(), data.test.x.numpy()])}
    assert not held & {tuple(row) for row in data.train.x.numpy()}


def test_given_held_out_sets_are_used_and_a_fully_labelled_file_takes_labels(tmp_path):
    x, _, y = blobs()
    np.savez(tmp_path / "d.npz", x=x[:200], y=y[:200], x_valid=x[200:250], y_valid=y[200:250],
             x_test=x[250:], y_test=y[250:])
    data = load_npz(tmp_path / "d.npz")
    assert (len(data.train), len(data.valid), len(data.test)) == (200, 50, 50)
    np.testing.assert_array_equal(data.test.x.numpy(), x[250:])
    assert data.labelled is None  # every example labelled: --labels picks a balanced subset
    assert torch.bincount(data.train.y[labelled_indices(data, 30, 0)]).tolist() == [10] * 3


def bad_file(path, case):
    x, y, _ = blobs()
    arrays = {"x": x, "y": y}
    if case == "no-x":
        del arrays["x"]
    elif case == "no-y":
        del arrays["y"]
    elif case == "x-strings":
        arrays["x"] = np.array([["a"] * 6] * 300)
    elif case == "x-1d":
        arrays["x"] = x[:, 0]
    elif case == "y-float":
        arrays["y"] = y.astype(np.float64)
    elif case == "nan":
        arrays["x"] = x.copy()
        arrays["x"][17, 2] = np.nan
    elif case == "lengths":
        arrays["y"] = y[:-1]
    elif case == "label-below":
        arrays["y"] = np.where(np.arange(300) == 4, -2, y)
    elif case == "class-without-label":
        arrays["y"] = np.where(y == 1, -1, y)
    elif case == "valid-without-labels":
        arrays["x_valid"] = x[:5]
    elif case == "valid-unlabelled":
        arrays.update(x_valid=x[:5], y_valid=np.array([0, 1, 2, -1, 0]))
    elif case == "valid-shape":
        arrays.update(x_valid=x[:5, :4], y_valid=np.zeros(5, np.int64))
    elif case == "unknown-array":
        arrays["x_val"] = x[:5]
    elif case == "too-few-labels":
        arrays["y"] = np.where(np.arange(300) < 3, np.arange(300) % 3, -1)
    elif case == "one-class":
        arrays["y"] = np.where(y == 0, 0, -1)
    np.savez(path, **arrays)
    if case == "pickled":
        np.savez(path, x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3, np.int64))
    elif case == "not-zip":
        path.write_bytes(b"not a zip file at all")


@pytest.mark.parametrize("case, phrase", [
    ("no-x", "has no array 'x'"),
    ("no-y", "has no array 'y'"),
    ("x-strings", "x must hold numbers"),
    ("x-1d", "x must have shape (N, D) or (N, H, W)"),
    ("y-float", "y must be a vector of integers"),
    ("nan", "x holds NaN or infinite values (first in example 17)"),
    ("lengths", "x has 300 examples but y has 299 labels"),
    ("label-below", "y holds -2"),
    ("class-without-label", "class 1 has no labelled example in y"),
    ("valid-without-labels", "x_valid and y_valid come together"),
    ("valid-unlabelled", "no -1 in held-out sets"),
    ("valid-shape", "x_valid has examples of shape (4,), x has (6,)"),
    ("unknown-array", "unexpected array 'x_val'"),
    ("too-few-labels", "too few to hold one out for valid"),
    ("one-class", "at least two classes"),
    ("pickled", "holds Python objects, which are not loaded"),
    ("not-zip", "is not a .npz file (numpy.savez writes a zip archive"),
])
def test_every_malformed_file_is_refused_in_one_line(tmp_path, capsys, case, phrase):
    path = tmp_path / "bad.npz"
    bad_file(path, case)
    with pytest.raises(DataError, match=None) as error:
        load_npz(path)
    assert phrase in str(error.value) and "\n" not in str(error.value)
    code, err = train_cli(capsys, "--dataset", str(path), "--max-steps", "1",
                          "--out", str(tmp_path / "run"))
    assert_error(code, err, phrase)


def test_bernoulli_refuses_values_outside_the_unit_interval(tmp_path, capsys):
    x, y, _ = blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, err = train_cli(capsys, "--dataset", str(tmp_path / "d.npz"), "--max-steps", "1",
                          "--out", str(tmp_path / "run"))
    assert_error(code, err, "--likelihood bernoulli needs [0, 1]", "--likelihood gaussian")
    code, err = train_cli(capsys, "--dataset", str(tmp_path / "d.npz"), "--likelihood",
                          "gaussian", "--out", str(tmp_path / "run"))
    assert_error(code, err, "add --no-binarize")


def test_gaussian_model_of_real_features_trains_predicts_and_scores(tmp_path, capsys):
    """Real-valued data far from [0, 1], few labels: the whole path from file to CSV."""
    x, y_partial, y_true = blobs(n=600, labels_per_class=10, scale=40.0, shift=100.0)
    np.savez(tmp_path / "d.npz", x=x[:500], y=y_partial[:500], x_test=x[500:],
             y_test=y_true[500:])
    out = tmp_path / "run"
    argv = [a for a in FAST if a not in ("--dataset", "synthetic")]
    code = main(["train", *argv, "--dataset", str(tmp_path / "d.npz"), "--likelihood",
                 "gaussian", "--no-binarize", "--epochs", "40", "--batch-size", "100",
                 "--labelled-batch-size", "20", "--no-batch-norm", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["num_classes"] == 3 and config["data"]["x_dim"] == 6
    summary = json.loads((out / "summary.json").read_text())
    # the file's labels, less one of each class held out for validation
    assert summary["labels"] == int((y_partial[:500] >= 0).sum()) - 3
    assert summary["test_accuracy_last"] > 0.9
    np.save(tmp_path / "new.npy", x[500:])
    assert main(["predict", "--run", str(out), "--input", str(tmp_path / "new.npy"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        labels = [int(row[1]) for row in list(csv.reader(f))[1:]]
    # the best-validation weights by default: the summary's test accuracy, on the same images
    assert np.mean(np.array(labels) == y_true[500:]) == pytest.approx(summary["test_accuracy"])
    assert main(["predict", "--run", str(out), "--input", str(tmp_path / "new.npy"),
                 "--weights", "last", "--out", str(tmp_path / "last.csv")]) == 0
    with open(tmp_path / "last.csv") as f:
        labels = [int(row[1]) for row in list(csv.reader(f))[1:]]
    assert np.mean(np.array(labels) == y_true[500:]) == pytest.approx(summary["test_accuracy_last"])
    run = load_run(out)
    scale = run.model.likelihood.scale()
    assert scale.shape == (6,) and not torch.allclose(scale, torch.ones(6))  # learned
    assert main(["evaluate", "--run", str(out), "--samples", "8"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["binarized"] is False and np.isfinite(result["log_px_per_image"])
    assert result["log_px_per_image"] > result["elbo_per_image"] - 1.0
