"""The experiment runner: every model x seed runs, a finished run is not run again, a
run with a checkpoint goes on from it, and the aggregate reports the test accuracy of
each run's best validation epoch, mean and std over seeds; the README's tables are
copied from the aggregate's files."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pytest
import torch

from experiments import compare, readme
from experiments.aggregate import aggregate, epochs_to_reach

# tiny networks on synthetic data: 2,000 training images, 4 steps an epoch
TINY = {"dataset": "synthetic", "hidden": [16], "z_dim": 4, "batch_size": 500,
        "labelled_batch_size": 50}


@pytest.fixture
def tiny_configs(monkeypatch):
    monkeypatch.setattr(compare, "config_for", lambda model, inference: dict(TINY))


def run_compare(results, *args):
    return compare.main(["--results", str(results), "--labels", "20", *args])


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_model_and_seed_runs_and_is_aggregated(tiny_configs, tmp_path, capsys):
    args = ("--models", "m2/enum", "mlp/ml", "--seeds", "0", "1", "--epochs", "2", "--jobs", "2")
    assert run_compare(tmp_path, *args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"m2/enum", "mlp/ml"}
    for key, directory in (("m2/enum", "m2-enum"), ("mlp/ml", "mlp-ml")):
        runs = [json.loads((tmp_path / "runs" / directory / f"seed{s}" / "summary.json").read_text())
                for s in (0, 1)]
        row = summary[key]
        tests = [r["test_accuracy"] for r in runs]  # each at its run's best validation epoch
        assert row["test_accuracy_mean"] == pytest.approx(statistics.fmean(tests))
        assert row["test_accuracy_std"] == pytest.approx(statistics.stdev(tests))
        assert row["seeds"] == [0, 1] and row["epochs"] == 2 and row["labels"] == 20
        seconds = sum(r["seconds"] for s in (0, 1)
                      for r in read_rows(tmp_path / "runs" / directory / f"seed{s}" / "metrics.jsonl"))
        assert row["wall_seconds"] == pytest.approx(seconds)
    table = (tmp_path / "results.md").read_text()
    assert "| m2/enum |" in table and "| mlp/ml |" in table
    assert (tmp_path / "figures" / "valid_accuracy.png").stat().st_size > 0
    assert (tmp_path / "figures" / "samples_m2-enum.png").stat().st_size > 0

    # the same command again runs nothing and leaves every run's files as they were
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/*/summary.json")}
    assert run_compare(tmp_path, *args) == 0
    assert capsys.readouterr().out.count("[done already]") == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_run_with_a_checkpoint_goes_on_from_it(tiny_configs, tmp_path):
    args = ("--models", "m2/gumbel", "--seeds", "3")
    assert run_compare(tmp_path, *args, "--epochs", "1") == 0
    metrics = tmp_path / "runs" / "m2-gumbel" / "seed3" / "metrics.jsonl"
    first = read_rows(metrics)
    assert len(first) == 1
    assert run_compare(tmp_path, *args, "--epochs", "2") == 0
    rows = read_rows(metrics)
    # epoch 1 is the checkpoint's record, timing included: it was not trained again
    assert len(rows) == 2 and rows[0] == first[0]
    assert json.loads((metrics.parent / "summary.json").read_text())["epochs"] == 2


def test_unfinished_runs_report_validation_only(tmp_path):
    for seed, accuracies in ((0, [0.5, 0.7]), (1, [0.6, 0.65, 0.62])):
        run = tmp_path / "runs" / "m2-score" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"device": "cpu"}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "valid_accuracy": a, "seconds": 10.0}) + "\n"
            for i, a in enumerate(accuracies)))
    row = aggregate(tmp_path, ["m2/score"], [0, 1])["m2/score"]
    assert row["partial"] and "test_accuracy_mean" not in row
    assert row["best_valid_accuracy_mean"] == pytest.approx(0.675)
    assert row["epochs_reached"] == [2, 3]
    assert "validation only" in (tmp_path / "results.md").read_text()


def test_an_unsupported_pair_is_refused_before_anything_runs(tmp_path, capsys):
    assert run_compare(tmp_path, "--models", "mlp/enum", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "compare: error: model 'mlp' does not take --inference 'enum'" in err
    assert not (tmp_path / "runs").exists()


def test_readme_blocks_are_filled_from_their_files(tmp_path, capsys):
    (tmp_path / "table.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    page = tmp_path / "README.md"
    page.write_text("# Results\n<!-- generated from table.md -->\nold numbers\n"
                    "<!-- end generated -->\nafter\n")
    assert readme.main([str(page)]) == 0
    assert page.read_text() == ("# Results\n<!-- generated from table.md -->\n| a | b |\n|---|---|\n"
                                "| 1 | 2 |\n<!-- end generated -->\nafter\n")
    assert readme.main([str(page)]) == 0  # filling twice changes nothing
    assert "| 1 | 2 |\n<!-- end generated -->" in page.read_text()

    page.write_text("<!-- generated from missing.md -->\n<!-- end generated -->\n")
    assert readme.main([str(page)]) == 2
    assert "missing.md does not exist: run the comparison" in capsys.readouterr().err
    assert page.read_text() == "<!-- generated from missing.md -->\n<!-- end generated -->\n"


def test_a_row_named_by_its_config_gives_model_inference_and_settings():
    key, model, inference, settings = compare.resolve("m2-gumbel-cat-kl-s3")
    assert (key, model, inference) == ("m2-gumbel-cat-kl-s3", "m2", "gumbel-cat-kl")
    assert settings["temperature"] == pytest.approx(1 / 3) and "model" not in settings
    assert compare.resolve("mlp/ml")[:3] == ("mlp/ml", "mlp", "ml")
    assert compare.run_dir(Path("r"), "m2/enum", 2) == Path("r/runs/m2-enum/seed2")
    with pytest.raises(argparse.ArgumentTypeError, match="MODEL/INFERENCE"):
        compare.resolve("no-such-config")


def test_epochs_to_reach_the_original_uses_the_mean_of_the_best_so_far():
    # seed means of the best so far: 0.85, 0.90, 0.915 -> 0.90 first reached at epoch 2
    curves = [[0.80, 0.92, 0.90], [0.90, 0.88, 0.93]]
    assert epochs_to_reach(curves, 0.90) == 2
    assert epochs_to_reach(curves, 0.95) is None


def test_diagnose_records_what_the_unlabelled_term_does(tmp_path):
    from experiments import diagnose

    out = tmp_path / "diagnosis"
    assert diagnose.main(["--row", "m2/score", "--dataset", "synthetic", "--steps", "4",
                          "--every", "2", "--draws", "3", "--valid", "200",
                          "--set", "hidden=[32]", "z_dim=4", "--out", str(out)]) == 0
    rows = json.loads((out / "diagnosis.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert -1 <= r["elbo_grad_cosine_with_heldout_descent"] <= 1
        assert r["elbo_grad_relative_variance"] > 0  # a sampled y: the draws differ
        assert len(r["kl_y"]) == 1 and r["kl_y"][0] >= -1e-6  # KL(q(y|x) || uniform)
    assert (out / "diagnosis.png").exists()
    figure = tmp_path / "both.png"
    assert diagnose.main(["--compare", str(out), str(out), "--out", str(figure)]) == 0
    assert figure.exists()


def test_rows_stop_at_the_original_number_and_count_as_finished(tmp_path):
    def namespace(*argv):
        parser = argparse.Namespace(stop_at_original="--stop-at-original" in argv, dataset=None,
                                    labels=100, epochs=30, device="cpu", data_dir=None)
        return parser

    gumbel = compare.resolve("m2-gumbel-cat-kl-s3")
    args = namespace("--stop-at-original")
    assert compare.stop_target(gumbel, args) == 0.941
    assert "--stop-at-accuracy" in compare.command(gumbel, 1, args, tmp_path)
    assert compare.stop_target(compare.resolve("adgm/enum"), args) is None  # no original row
    assert compare.stop_target(gumbel, namespace()) is None
    assert compare.stop_target(("x", "m2", "enum", {"dataset": "fashion-mnist"}), args) is None
    assert "--stop-at-accuracy" not in compare.command(gumbel, 1, namespace(), tmp_path)

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"epochs": 12, "stopped_by": "accuracy", "stop_at_accuracy": 0.941}))
    assert compare.is_done(run, 30, 0.941)
    assert not compare.is_done(run, 30)  # without the target: go on to 30 epochs
    assert not compare.is_done(run, 30, 0.95)


def test_a_row_whose_runs_stopped_early_keeps_their_best(tmp_path):
    for seed, accuracies in ((0, [0.80, 0.90, 0.93, 0.95]), (1, [0.88, 0.92])):
        run = tmp_path / "runs" / "mlp-ml" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "valid_accuracy": a, "seconds": 1.0}) + "\n"
            for i, a in enumerate(accuracies)))
        (run / "summary.json").write_text(json.dumps({
            "seed": seed, "epochs": len(accuracies), "test_accuracy": max(accuracies),
            "best_valid_accuracy": max(accuracies),
            "stopped_by": "epochs" if seed == 0 else "accuracy"}))
    row = aggregate(tmp_path, ["mlp/ml"], [0, 1])["mlp/ml"]
    assert row["epochs_per_seed"] == [4, 2] and row["stopped_by"] == ["epochs", "accuracy"]
    # seed 1 keeps its 0.92 after it stopped: mean best so far 0.84, 0.91, 0.925, 0.935
    assert row["epochs_to_original"] == 1  # the original MLP's 0.771, passed at epoch 1
    assert epochs_to_reach([[0.80, 0.90, 0.93, 0.95], [0.88, 0.92]], 0.925) == 3
    table = (tmp_path / "results.md").read_text()
    assert "| 2 | 2-4 |" in table and "`--stop-at-original`" in table
    assert (tmp_path / "figures" / "valid_accuracy.png").stat().st_size > 0


def test_class_code_measures_what_the_class_weights_carry():
    import math

    import torch

    from experiments.probes import class_code
    from ppl_ssvae.config import Settings
    from ppl_ssvae.registry import build

    pair = build(Settings(model="logistic-normal-prior", inference="reparam", temperature=1 / 3,
                          hidden=(8,), z_dim=2, batch_norm=False), 3, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loc = 20.0 * torch.nn.functional.one_hot(y, 3).float()

    class Fixed(torch.nn.Module):  # q(a|x): N(20 * onehot(y), 0.5^2), whatever x is
        def forward(self, x):
            return loc, torch.full_like(loc, 0.5)

    pair.guide.scores = Fixed()
    code = class_code(pair, torch.rand(6, 4), y)
    # KL(N(m, 0.5^2) || N(0, 3^2)) = log(3 / 0.5) + (0.25 + m^2) / 18 - 1/2, by hand
    by_hand = [math.log(6) + (0.25 + m ** 2) / 18 - 0.5 for m in (0.0, 20.0)]
    per_dim = (2 * by_hand[0] + by_hand[1]) / 3  # each dimension is 20 for a third of the images
    assert code["kl_a_per_dim"] == pytest.approx([per_dim] * 3, rel=1e-5)
    assert code["kl_a"] == pytest.approx(3 * per_dim, rel=1e-5)
    assert code["class_share_of_variance"] == pytest.approx(1.0)  # the mean is the class alone
    assert code["valid_accuracy"] == 1.0
    assert code["alpha_entropy"] < 1e-3 and code["alpha_top"] > 0.999  # at the corners

    shuffled = y[torch.tensor([1, 2, 0, 1, 2, 0])]  # labels the mean no longer follows
    assert class_code(pair, torch.rand(6, 4), torch.tensor([0, 0, 0, 1, 1, 1]))[
        "class_share_of_variance"] == pytest.approx(0.0, abs=1e-6)
    assert class_code(pair, torch.rand(6, 4), shuffled)["valid_accuracy"] == 0.0


def test_decoder_class_share_is_the_part_of_the_picture_the_class_draws():
    import torch

    from experiments.probes import decoder_class_share
    from ppl_ssvae.config import Settings
    from ppl_ssvae.registry import build

    model = build(Settings(model="m2", inference="enum", hidden=(8,), z_dim=2), 3, 4).model
    torch.manual_seed(0)
    w_z, w_y = torch.randn(2, 4), torch.randn(3, 4)

    class Decoder(torch.nn.Module):
        def __init__(self, from_z: float, from_y: float):
            super().__init__()
            self.from_z, self.from_y = from_z, from_y

        def forward(self, z, y):
            return self.from_z * z @ w_z + self.from_y * y @ w_y

    model.decoder = Decoder(1.0, 0.0)  # the class changes nothing
    assert decoder_class_share(model, n=50) == pytest.approx(0.0, abs=1e-6)
    model.decoder = Decoder(0.0, 1.0)  # z changes nothing
    assert decoder_class_share(model, n=50) == pytest.approx(1.0)
    model.decoder = Decoder(1.0, 1.0)
    # by hand: pixel means sigmoid(z W_z + e_k W_y) at the same z ~ N(0, I) draws
    z = torch.randn((50, 2), generator=torch.Generator().manual_seed(0))
    means = torch.sigmoid(z[:, None, :] @ w_z + torch.eye(3)[None] @ w_y)  # (50, 3, 4)
    between = ((means - means.mean(1, keepdim=True)) ** 2).sum()
    total = ((means - means.reshape(-1, 4).mean(0)) ** 2).sum()
    assert decoder_class_share(model, n=50) == pytest.approx(float(between / total), rel=1e-5)


def test_linear_probe_reads_the_class_only_where_the_code_has_it():
    import torch

    from experiments.probes import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    coded = torch.nn.functional.one_hot(y, 4).float() + 0.1 * torch.randn((400, 4), generator=g)
    assert linear_probe(torch.cat([coded, torch.randn((400, 3), generator=g)], 1), y) == 1.0
    noise = torch.randn((400, 7), generator=g)  # no class in it: about 1 in 4 right
    assert linear_probe(noise, y) < 0.4


def test_auxiliary_use_measures_how_much_the_adgms_a_moves_its_classifier():
    import math

    import torch

    from experiments.probes import auxiliary_use
    from ppl_ssvae.config import Settings
    from ppl_ssvae.registry import build

    pair = build(Settings(model="adgm", inference="enum", hidden=(8,), z_dim=2, batch_norm=False),
                 2, 4)
    x, y = torch.rand(400, 4), torch.randint(0, 2, (400,))

    class Aux(torch.nn.Module):  # q(a | x) = N(0, I)
        def forward(self, x):
            return torch.zeros(len(x), 2), torch.ones(len(x), 2)

    class ByA(torch.nn.Module):  # q(y | a, x): the sign of a_1, sharply
        def forward(self, x, a):
            return 50 * torch.stack([a[:, 0], -a[:, 0]], -1)

    class ByX(torch.nn.Module):  # q(y | a, x): from x alone
        def forward(self, x, a):
            return torch.stack([x[:, 0], x[:, 1]], -1)

    pair.guide.aux_encoder = Aux()
    pair.guide.classifier = ByA()
    torch.manual_seed(0)
    used = auxiliary_use(pair, x, y, draws=200)
    # each draw all but certain, their mixture near (1/2, 1/2): I(y; a | x) = log 2
    assert used["mutual_information_y_a"] == pytest.approx(math.log(2), abs=0.02)
    assert used["prediction_changes"] == 1.0 and used["a_scale_mean"] == 1.0
    pair.guide.classifier = ByX()
    unused = auxiliary_use(pair, x, y, draws=20)
    assert unused["mutual_information_y_a"] == pytest.approx(0.0, abs=1e-6)
    assert unused["prediction_changes"] == 0.0
    right = float(((x[:, 1] > x[:, 0]).long() == y).float().mean())  # by hand
    assert unused["valid_accuracy"] == unused["valid_accuracy_mixture"] == pytest.approx(right)


def test_diagnose_of_a_directory_that_is_not_a_run_says_so_in_one_line(tmp_path, capsys):
    from experiments import diagnose

    for mode in ("--code", "--signal"):
        assert diagnose.main([mode, str(tmp_path), "--out", str(tmp_path / "out.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is not a run directory" in err
    assert not (tmp_path / "out.json").exists()


def test_diagnose_measures_a_run_on_its_own_data(tmp_path, capsys):
    """--code reads a run's --dataset from its config.json (synthetic here: with MNIST's
    data the measurement would not be of the images it was trained on)."""
    import shutil

    import torch

    from conftest import small_settings
    from experiments import diagnose
    from ppl_ssvae import train

    torch.set_num_threads(1)
    run = tmp_path / "run"
    train(small_settings(max_steps=10, epochs=1, batch_size=100, out=str(run), figures=False))
    assert diagnose.main(["--code", str(run), "--valid", "200", "--out",
                          str(tmp_path / "code.json")]) == 0
    measured = json.loads((tmp_path / "code.json").read_text())[f"{run} (best)"]  # its path
    assert 0.0 <= measured["z_probe_accuracy"] <= 1.0 and measured["valid_accuracy"] > 0.2
    assert diagnose.main(["--signal", str(run), "--draws", "3", "--clip", "1e-6", "--out",
                          str(tmp_path / "signal.json")]) == 0
    signal = json.loads((tmp_path / "signal.json").read_text())[str(run)]
    assert signal["classifier_term_norm"] > 0  # the supervised term pulls the classifier
    assert signal["step_clip1e-06"]["clipped_fraction"] == 1.0

    older = tmp_path / "older"  # a config.json without its data, naming other data
    shutil.copytree(run, older)
    config = json.loads((older / "config.json").read_text())
    del config["data"]
    (older / "config.json").write_text(json.dumps({**config, "dataset": "two-digit-mnist"}))
    capsys.readouterr()
    assert diagnose.main(["--code", str(older), "--out", str(tmp_path / "older.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not fit this pair" in err
    assert not (tmp_path / "older.json").exists()


def test_where_the_class_is_reads_each_label_site_and_z1():
    """diagnose --code on a two-digit pair: per digit, the classifier's accuracy, the
    decoder's share and a probe of z; a decoder that draws the left digit alone gives
    that digit the whole class share and the right digit none. On a hierarchical pair,
    probes of z1 and z2."""
    import torch

    from experiments.probes import where_the_class_is
    from ppl_ssvae.config import Settings
    from ppl_ssvae.registry import build

    small = dict(hidden=(8,), z_dim=2, batch_norm=False, activation="softplus",
                 input_dropout=0.0)
    pair = build(Settings(model="two-digit", **small), 100, 6)
    torch.manual_seed(0)
    w_z, w_1 = torch.randn(2, 6), torch.randn(10, 6)

    class LeftDigitOnly(torch.nn.Module):
        def forward(self, z, y1, y2):
            return z @ w_z + y1 @ w_1

    pair.model.decoder = LeftDigitOnly()
    x, y = torch.rand(60, 6), torch.randint(0, 100, (60,))
    code = where_the_class_is(pair, x, y)
    assert {"y1_accuracy", "y2_accuracy", "decoder_y1_share", "decoder_y2_share",
            "z_probe_y1_accuracy", "z_probe_y2_accuracy"} <= code.keys()
    assert code["decoder_y1_share"] == pytest.approx(code["decoder_class_share"], rel=1e-5)
    assert code["decoder_y2_share"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= code["y1_accuracy"] <= 1.0

    pair = build(Settings(model="hierarchical", z1_dim=3, label_hidden=4, **small), 4, 6)
    code = where_the_class_is(pair, torch.rand(40, 6), torch.randint(0, 4, (40,)))
    assert {"z1_probe_accuracy", "z2_probe_accuracy", "decoder_class_share"} <= code.keys()

    # the supervised baseline: its accuracy per digit, by hand, and nothing generative
    pair = build(Settings(model="two-digit-mlp", inference="ml", **small), 100, 6)
    x, y = torch.rand(60, 6), torch.randint(0, 100, (60,))
    code = where_the_class_is(pair, x, y)
    guess = pair.classify(x).argmax(-1)
    assert code.keys() == {"valid_accuracy", "y1_accuracy", "y2_accuracy"}
    assert code["y2_accuracy"] == pytest.approx(float((guess % 10 == y % 10).float().mean()))


def test_estimator_summary_measures_deviation_and_bias_as_documented():
    """experiments.estimators: deviation is sqrt(sum of the coordinates' variances), bias
    the distance of the means over the exact mean's norm, against draws made by hand."""
    from experiments import estimators

    g = torch.Generator().manual_seed(0)
    exact = torch.tensor([3.0, 4.0]) + 0.01 * torch.randn(400, 2, generator=g)
    noisy = torch.tensor([3.0, 4.0]) + torch.tensor([0.0, 1.0]) + 2.0 * torch.randn(400, 2, generator=g)
    measured = {name: {"cpu_ms": ms, "grads": {"classifier": draws, "decoder": draws}}
                for name, ms, draws in (("enum", 9.0, exact), ("other", 1.0, noisy))}
    rows = estimators.summarise(measured)
    assert rows["other"]["cpu_ms"] == 1.0
    assert rows["other"]["deviation_classifier"] == pytest.approx(2.0 * 2 ** 0.5, rel=0.1)
    assert rows["enum"]["bias_classifier"] == 0.0
    noise = rows["other"]["bias_noise_classifier"]
    assert noise == pytest.approx(2.0 * (2 / 400) ** 0.5 / 5, rel=0.1)
    assert abs(rows["other"]["bias_classifier"] - 1.0 / 5.0) < 3 * noise


def test_step_gradients_clip_as_the_training_step_does(tiny):
    """diagnose --signal --clip: each clipped draw is the raw draw scaled by
    min(1, c * B / |whole gradient|), as ``--clip-norm c`` scales the step."""
    from conftest import make_batch, small_pair
    from experiments.probes import classifier_parameters, step_gradients

    pair, _ = small_pair(inference="score")
    batch = make_batch(tiny)
    params = classifier_parameters(pair, batch.x_u)
    torch.manual_seed(0)
    rows = step_gradients(pair, batch, params, draws=5, clips=[1e-6, 1e9])
    assert torch.equal(rows["clip1e+09"], rows["raw"])
    scale = 1e-6 / rows["norm"]  # every draw is clipped at a tiny c
    assert torch.allclose(rows["clip1e-06"], rows["raw"] * scale[:, None], rtol=1e-5)
    assert rows["raw"].std(0).sum() > 0  # a sampled y: the draws differ
