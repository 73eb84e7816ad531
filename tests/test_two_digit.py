"""Two-digit MNIST: composed from the right MNIST split, labelled 10 * left + right,
the same whatever --seed, its composition cached and a bad cache rebuilt, and a model
trains on it with x_dim and K taken from the data."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from clitools import assert_error, train_cli
from ppl_ssvae import data as data_lib
from ppl_ssvae.data import Dataset, Split, two_digit

train_lib = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache directory of this module's own: the first load here composes."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def own_cache(cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(scope="module")
def mnist():
    return data_lib.load_mnist()


@pytest.fixture(scope="module")
def pairs(cache, mnist):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(cache))
        data = data_lib.load("two-digit-mnist", seed=0)
        indices = two_digit.source_indices()
    return data, indices


def test_shape_sizes_and_balance(pairs):
    data, _ = pairs
    assert (data.num_classes, data.x_dim, data.shape) == (100, 1568, (28, 56))
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10_000, 10_000)
    counts = torch.bincount(data.train.y, minlength=100)
    assert len(counts) == 100 and int(counts.min()) >= 400  # every class well represented
    assert int(torch.bincount(data.test.y, minlength=100).min()) >= 80


@pytest.mark.parametrize("name", ["train", "valid", "test"])
def test_each_image_is_its_two_source_digits_and_labelled_by_them(pairs, mnist, name):
    data, indices = pairs
    split, source = getattr(data, name), getattr(mnist, name)
    left = torch.from_numpy(indices[f"{name}_left"])
    right = torch.from_numpy(indices[f"{name}_right"])
    assert torch.equal(split.y, 10 * source.y[left] + source.y[right])
    images = split.x.reshape(-1, 28, 56)
    assert torch.equal(images[:, :, :28].reshape(-1, 784), source.x[left])
    assert torch.equal(images[:, :, 28:].reshape(-1, 784), source.x[right])
    # every source image is the left digit of exactly one pair
    assert torch.equal(left.sort().values, torch.arange(len(source)))


def test_no_validation_or_test_digit_appears_in_a_training_pair(pairs, mnist):
    data, indices = pairs
    assert indices["train_left"].max() < len(mnist.train)
    assert indices["train_right"].max() < len(mnist.train)
    held_out = {row.tobytes() for split in (mnist.valid, mnist.test) for row in split.x.numpy()}
    halves = data.train.x.reshape(-1, 28, 2, 28).permute(0, 2, 1, 3).reshape(-1, 784).numpy()
    assert not any(row.tobytes() in held_out for row in halves)


def test_the_composition_is_fixed_whatever_the_seed(pairs, mnist, own_cache):
    data, indices = pairs
    again = data_lib.LOADERS["two-digit-mnist"](None, 7)  # another --seed
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)
    first, second = two_digit.composition(mnist), two_digit.composition(mnist)  # not cached
    assert set(first) == set(indices)
    for key in first:
        assert np.array_equal(first[key], second[key]) and np.array_equal(first[key], indices[key])


def test_the_cache_is_used_and_a_bad_one_rebuilt(pairs, own_cache, monkeypatch):
    data, _ = pairs
    files = list((own_cache / "ppl_ssvae").glob("two-digit-mnist-v1-seed12-*.npz"))
    assert len(files) == 1
    path = files[0]
    compose = two_digit.composition

    def refuse(mnist):
        raise AssertionError("composed again although the cache was good")

    monkeypatch.setattr(two_digit, "composition", refuse)
    assert torch.equal(data_lib.load("two-digit-mnist").train.y, data.train.y)

    calls = []
    monkeypatch.setattr(two_digit, "composition", lambda mnist: calls.append(1) or compose(mnist))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    assert torch.equal(data_lib.load("two-digit-mnist").train.x, data.train.x)
    with np.load(path) as f:  # rewritten whole
        tampered = {key: f[key] for key in f.files}
    tampered["train_right"] = np.roll(tampered["train_right"], 1)  # labels no longer match
    np.savez(path, **tampered)
    assert torch.equal(data_lib.load("two-digit-mnist").train.x, data.train.x)
    assert len(calls) == 2 and path.read_bytes() == good


def test_labels_must_be_a_multiple_of_the_100_classes(capsys, own_cache):
    code, err = train_cli(capsys, "--dataset", "two-digit-mnist", "--labels", "150",
                          "--out", str(own_cache / "run"))
    assert_error(code, err, "--labels must be a positive multiple of the 100 classes, got 150")


def test_a_few_steps_train_with_1568_pixels_and_100_classes(capsys, own_cache, tmp_path,
                                                             monkeypatch):
    test_elbo = train_lib._test_elbo

    def on_a_subset(pair, data, settings):  # the exact ELBO over 100 classes on 10,000
        few = Split(data.test.x[:200], data.test.y[:200])  # images is a minute of CPU
        return test_elbo(pair, Dataset(data.train, data.valid, few, data.num_classes,
                                       data.source, data.shape, data.name), settings)

    monkeypatch.setattr(train_lib, "_test_elbo", on_a_subset)
    out = tmp_path / "run"
    code, err = train_cli(capsys, "--dataset", "two-digit-mnist", "--labels", "1000",
                          "--max-steps", "5", "--hidden", "50", "--figures", "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and 0.0 <= summary["test_accuracy_last"] <= 1.0
    assert np.isfinite(summary["test_elbo"])
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    shapes = {tuple(t.shape) for t in checkpoint["networks"].values()}
    assert any(1568 in s for s in shapes) and any(100 in s for s in shapes)
    assert (out / "samples.png").stat().st_size > 0
