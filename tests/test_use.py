"""Using a trained run: load_run's API, and the predict, evaluate and sample commands
with every refusal (one line naming what the run expects, exit status 2)."""

from __future__ import annotations

import csv
import gzip
import json
import math
import shutil
import struct

import numpy as np
import pytest
import torch

from clitools import assert_error
from conftest import small_settings
from ppl_ssvae import evaluate, load_run, one_hot, train
from ppl_ssvae.cli import main
from ppl_ssvae.data import synthetic
from ppl_ssvae.reference import _bracket


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    train(small_settings(max_steps=60, epochs=1, batch_size=100, classifier_weight=1.0,
                         out=str(out), figures=False))
    return out


@pytest.fixture(scope="module")
def test_images():
    data = synthetic(seed=0)  # the run's data: its test split
    return data.test.x[:40].numpy(), data.test.y[:40].numpy()


def write_idx(path, images: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", *images.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_load_run_rebuilds_the_pair_and_predicts(run_dir, test_images):
    x, y = test_images
    run = load_run(run_dir)
    assert run.num_classes == 10 and run.shape == (28, 28)
    assert run.settings.z_dim == 4 and run.settings.hidden == (32,)
    probs = run.predict_proba(x)
    assert probs.shape == (40, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(40))
    assert torch.equal(run.predict(x), probs.argmax(1))
    assert float((run.predict(x).numpy() == y).mean()) > 0.8  # learnable synthetic classes
    # images (N, 28, 28), flat rows (N, 784) and one image give the same answers
    torch.testing.assert_close(run.predict_proba(x.reshape(40, 28, 28)), probs)
    torch.testing.assert_close(run.predict_proba(x[0].reshape(28, 28)), probs[:1])
    # the Pyro pair is there as it was trained: the same classifier as the checkpoint's
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for name, value in run.pair.state_dict().items():
        torch.testing.assert_close(value, payload["networks"][name])
    assert run.model is run.pair.model and run.guide is run.pair.guide


def test_a_run_that_did_not_record_its_data_gets_its_data_sets_shape(run_dir, tmp_path):
    from ppl_ssvae.checkpoint import CheckpointError
    from ppl_ssvae.run import RunError

    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    config = json.loads((older / "config.json").read_text())
    del config["data"]  # as config.json was written before it recorded the data

    def written_for(dataset):
        (older / "config.json").write_text(json.dumps({**config, "dataset": dataset}))

    written_for("synthetic")
    run = load_run(older)
    assert (run.num_classes, run.shape) == (10, (28, 28))
    written_for("two-digit-mnist")  # built for 100 classes: these weights do not fit it
    with pytest.raises(CheckpointError, match=r"torch.Size\(\[10\]\).*torch.Size\(\[100\]\)"):
        load_run(older)
    written_for(str(tmp_path / "mine.npz"))  # no fixed shape to fall back on
    with pytest.raises(RunError, match="does not record its data's shape"):
        load_run(older)


def test_samples_have_the_data_shape_and_the_class_asked_for(run_dir):
    run = load_run(run_dir)
    images = run.sample(6, y=3, seed=1)
    assert images.shape == (6, 28, 28) and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert torch.equal(images, run.sample(6, y=3, seed=1))  # fixed by the seed
    assert not torch.equal(images, run.sample(6, y=4, seed=1))  # the class matters
    assert run.sample_grid(5).shape == (10, 5, 784)


def test_log_marginal_is_the_importance_sampled_sum_over_classes(run_dir, test_images):
    """Burda et al.'s estimate, exact in y: log sum_y mean_s p(x, y, z_s) / q(z_s | x, y),
    computed by hand on the same networks and the same draws of z."""
    run = load_run(run_dir)
    x = (torch.from_numpy(test_images[0][:7]) > 0.5).float()
    s = 5
    got = run.log_marginal(x, samples=s, seed=3)
    torch.manual_seed(3)
    terms = []
    with torch.no_grad():
        for c in range(10):
            eps = torch.randn(s, 7, run.settings.z_dim)
            log_w = _bracket(run.model, run.guide, x, one_hot(torch.full((7,), c), 10), eps)
            terms.append(torch.logsumexp(log_w, 0) - math.log(s))
    torch.testing.assert_close(got, torch.logsumexp(torch.stack(terms), 0), rtol=1e-5, atol=1e-3)
    # more samples, a tighter bound: above the ELBO, on average over images
    elbo = evaluate.elbo_per_image(run.pair, x, seed=0)
    assert float(run.log_marginal(x, samples=200).mean()) > elbo


def test_predict_writes_one_row_per_example_from_npy_npz_and_idx(run_dir, test_images, tmp_path,
                                                                  capsys):
    x, y = test_images
    run = load_run(run_dir)
    images = np.round(x * 255).astype(np.uint8).reshape(-1, 28, 28)
    np.save(tmp_path / "x.npy", x.reshape(-1, 28, 28))
    np.savez(tmp_path / "x.npz", x=x)
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    for name in ("x.npy", "x.npz", "x-idx3-ubyte.gz"):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--run", str(run_dir), "--input", str(tmp_path / name),
                     "--out", str(out)]) == 0, capsys.readouterr().err
        rows = read_csv(out)
        assert rows[0] == ["index", "label"] + [f"p{c}" for c in range(10)]
        assert len(rows) == 41 and [int(r[0]) for r in rows[1:]] == list(range(40))
        probs = np.array([[float(p) for p in r[2:]] for r in rows[1:]])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
        labels = [int(r[1]) for r in rows[1:]]
        assert labels == probs.argmax(1).tolist()
        expected = run.predict(images / 255.0 if "idx" in name else x).tolist()
        assert labels == expected


@pytest.mark.parametrize("array, phrases", [
    (np.zeros((5, 100), np.float32), ["shape (5, 100)", "(28, 28)", "(N, 784)"]),
    (np.full((5, 784), 255, np.uint8), ["[255, 255]", "[0, 1]", "divide by 255"]),
    (np.array([["a"] * 784] * 2), ["type <U1", "numbers"]),
    (np.full((3, 784), np.nan, np.float32), ["NaN"]),
])
def test_predict_refuses_input_the_run_cannot_take(run_dir, tmp_path, capsys, array, phrases):
    np.save(tmp_path / "bad.npy", array)
    code = main(["predict", "--run", str(run_dir), "--input", str(tmp_path / "bad.npy"),
                 "--out", str(tmp_path / "p.csv")])
    assert_error(code, capsys.readouterr().err, *phrases)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("case, phrases", [
    ("missing-input", ["does not exist"]),
    ("text-input", ["give a .npy, .npz or IDX .gz file"]),
    ("not-a-run", ["is not a run directory", "ppl-ssvae train"]),
    ("no-checkpoint", ["has no checkpoint.pt"]),
    ("npz-without-x", ["name the examples x"]),
    ("no-out-dir", ["does not exist: create it first"]),
])
def test_predict_refuses_bad_paths_in_one_line(run_dir, tmp_path, capsys, case, phrases):
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.float32))
    run, source, out = str(run_dir), str(tmp_path / "x.npy"), str(tmp_path / "p.csv")
    if case == "missing-input":
        source = str(tmp_path / "nothing.npy")
    elif case == "text-input":
        (tmp_path / "x.txt").write_text("0 1\n")
        source = str(tmp_path / "x.txt")
    elif case == "not-a-run":
        run = str(tmp_path)
    elif case == "no-checkpoint":
        (tmp_path / "config.json").write_text(json.dumps({"model": "m2"}))
        run = str(tmp_path)
    elif case == "npz-without-x":
        np.savez(tmp_path / "two.npz", a=np.zeros((2, 784)), b=np.zeros(2))
        source = str(tmp_path / "two.npz")
    elif case == "no-out-dir":
        out = str(tmp_path / "missing" / "p.csv")
    code = main(["predict", "--run", run, "--input", source, "--out", out])
    assert_error(code, capsys.readouterr().err, *phrases)


def test_evaluate_writes_every_measurement_and_figure(run_dir, capsys):
    code = main(["evaluate", "--run", str(run_dir), "--samples", "4", "--max-images", "120"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((run_dir / "evaluation.json").read_text())
    run = load_run(run_dir)
    data = synthetic(seed=0)
    x, y = data.test.x[:120], data.test.y[:120]
    predicted = run.predict(x)
    assert result["images"] == 120 and result["split"] == "test"
    assert result["accuracy"] == pytest.approx(float((predicted == y).float().mean()))
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 120
    assert matrix.trace() == int((predicted == y).sum())
    for c in range(10):
        members = y == c
        if members.any():
            assert result["per_class_accuracy"][c] == pytest.approx(
                float((predicted[members] == c).float().mean()))
    assert result["samples"] == 4 and result["exact_in_y"] is True
    # log p(x) is an estimate of the quantity the ELBO bounds from below
    assert result["log_px_per_image"] > result["elbo_per_image"] - 5.0
    assert result["elbo_per_image"] < 0
    for name in ("confusion_matrix.png", "latent_pca.png"):
        assert (run_dir / name).stat().st_size > 0
    assert main(["evaluate", "--run", str(run_dir), "--split", "valid", "--samples", "1",
                 "--max-images", "50"]) == 0
    assert json.loads((run_dir / "evaluation-valid.json").read_text())["images"] == 50


@pytest.mark.parametrize("argv, phrases", [
    (["--split", "holdout"], ["--split takes train, valid or test"]),
    (["--samples", "0"], ["--samples must be positive"]),
])
def test_evaluate_refuses_bad_options(run_dir, capsys, argv, phrases):
    code = main(["evaluate", "--run", str(run_dir), *argv])
    assert_error(code, capsys.readouterr().err, *phrases)


def test_pca_finds_the_direction_of_largest_spread():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(500, 3, generator=g) * torch.tensor([0.1, 5.0, 1.0])
    projected = evaluate.pca_2d(points)
    assert projected.shape == (500, 2)
    assert float(projected[:, 0].var()) == pytest.approx(float(points[:, 1].var()), rel=0.05)
    assert float(projected[:, 1].var()) == pytest.approx(float(points[:, 2].var()), rel=0.1)


def test_sample_command_draws_a_grid_or_one_class(run_dir, tmp_path, capsys):
    grid, row = tmp_path / "grid.png", tmp_path / "row.png"
    assert main(["sample", "--run", str(run_dir), "--out", str(grid)]) == 0
    assert main(["sample", "--run", str(run_dir), "--class", "7", "--n", "5",
                 "--out", str(row)]) == 0
    for path in (grid, row):
        assert path.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert_error(main(["sample", "--run", str(run_dir), "--class", "10", "--out", str(row)]),
                 capsys.readouterr().err, "class 10 is not one of this run's classes 0..9")
    assert_error(main(["sample", "--run", str(run_dir), "--out", str(tmp_path / "s.csv")]),
                 capsys.readouterr().err, "give a .png")


def test_a_classifier_without_a_decoder_cannot_sample(tmp_path, capsys):
    out = tmp_path / "mlp"
    train(small_settings(model="mlp", inference="ml", max_steps=3, epochs=1, out=str(out),
                         figures=False))
    assert load_run(out).predict(np.zeros((2, 784), np.float32)).shape == (2,)
    assert_error(main(["sample", "--run", str(out), "--out", str(tmp_path / "s.png")]),
                 capsys.readouterr().err, "has no p(x | y, z)")
