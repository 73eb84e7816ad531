"""What a new user meets in the first minutes: each model's own default inference,
progress output that suits where it goes, commands that write only where told,
prediction in evaluation mode, the best weights kept, honest records of short runs."""

from __future__ import annotations

import io
import json

import pytest
import torch

from conftest import make_batch, small_pair, small_settings
from experiments import aggregate
from ppl_ssvae import Settings, bench, build, evaluate, plots
from ppl_ssvae import data as data_lib
from ppl_ssvae.checkpoint import BEST_FILE, load_weights
from ppl_ssvae.cli import main
from ppl_ssvae.progress import Progress
from ppl_ssvae.train import train

TINY = ["--dataset", "synthetic", "--hidden", "16", "--z-dim", "2", "--batch-size", "50",
        "--labelled-batch-size", "10", "--eval-batch-size", "500", "--no-figures",
        "--no-progress"]


@pytest.mark.parametrize(("model", "default"), [("dirichlet", "reparam"), ("mlp", "ml"),
                                                ("logistic-normal-prior", "reparam"),
                                                ("m2", "enum")])
def test_each_model_trains_with_its_own_default_inference(tmp_path, model, default):
    assert Settings().inference is None
    assert main(["train", "--model", model, "--max-steps", "2", "--out", str(tmp_path), *TINY]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["inference"] == default
    assert json.loads((tmp_path / "summary.json").read_text())["inference"] == default


def test_progress_off_a_terminal_is_a_line_every_so_often():
    """Not a terminal (a log file, nohup, CI): no redraws, at most a line every
    ``every`` seconds plus one per epoch."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(1000, 0, "m2/enum", stream=stream, every=30.0, clock=lambda: now[0])
    for step in range(1000):
        now[0] += 0.1  # 100 s in all
        progress.update(loss="1.0")
        if step == 499:
            progress.epoch_done(1, 0.5)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 3 <= len(lines) <= 100 / 30 + 1 + 1
    assert lines[0].startswith("m2/enum: step 300/1000") and "loss=1.0" in lines[0]
    assert any("epoch 1 done" in line for line in lines)


def test_a_short_run_records_what_it_did(tmp_path, capsys, monkeypatch):
    """--max-steps within the first epoch: the summary says a fraction of an epoch, no
    seconds per epoch, progress off a terminal is one line, and the KL figure says
    what it computes."""
    titles = []
    monkeypatch.setattr(plots, "kl_heatmap", lambda history, path, title: titles.append(title))
    settings = small_settings(max_steps=10, batch_size=50, labelled_batch_size=10,
                              eval_batch_size=500, out=str(tmp_path), progress=True)
    summary = train(settings)
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) == 1 and "stopped 0.25 into epoch 1" in err
    steps_per_epoch = 2000 // 50
    assert summary["steps"] == 10 and summary["steps_per_epoch"] == steps_per_epoch
    assert summary["epochs"] == 0 and summary["epochs_trained"] == pytest.approx(10 / steps_per_epoch)
    assert summary["seconds_per_epoch"] is None
    assert summary["seconds_per_step"] == pytest.approx(summary["seconds"] / 10)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["epoch_fraction"] == pytest.approx(0.25)
    assert titles and titles[0].startswith("sum_y q(y|x) KL(q(z|x,y) || p(z))")


def test_a_one_point_learning_curve_is_visible(tmp_path):
    history = [{"epoch": 1, "epoch_fraction": 0.4, "loss": 180.0, "negative_elbo": 170.0,
                "valid_accuracy": 0.82}]
    fig = plots.learning_curves(history, tmp_path / "curves.png")
    ax_loss, ax_acc = fig.axes
    for ax in (ax_loss, ax_acc):
        low, high = ax.get_xlim()
        assert low == 0 and 0.4 < high < 1  # epochs run, from 0: the point is not at an edge
        assert all(line.get_markersize() >= 4 for line in ax.get_lines())
    low, high = ax_acc.get_ylim()
    assert high - low >= 10 and low < 82 < high
    low, high = ax_loss.get_ylim()
    assert low < 170 and 180 < high and high - low > 20


def test_the_comparison_table_shows_no_spread_for_one_seed():
    row = {"test_accuracy_mean": 0.9, "test_accuracy_std": 0.0, "best_valid_accuracy_mean": 0.91,
           "best_valid_accuracy_std": 0.0, "test_elbo_mean": -100.0, "seeds": [0], "epochs": 1,
           "labels": 100, "wall_seconds": 60.0, "seconds_per_epoch": 60.0, "device": "cpu"}
    table = aggregate.markdown({"m2/enum": row, "m2/gumbel": {**row, "seeds": [0, 1],
                                                              "test_accuracy_std": 0.01}})
    assert "± 0.00" not in table
    assert "| m2/enum | 90.00 (1 seed) |" in table and "| m2/gumbel | 90.00 ± 1.00 |" in table


def _bench_rows():
    base = {"classes": 10, "cpu_ms": 1.0, "repeats": 2, "warmup": 1, "torch": "t", "pyro": "p",
            "device": "cpu", "threads": 1, "quick": True}
    return [{**base, "section": "step", "model": m, "inference": i, "step_ms": ms,
             "examples_per_s": 200 / ms * 1000, "vs_plain": ms / 10}
            for m, i, ms in [("plain-torch-m2", "exact", 10.0), ("m2", "enum", 11.0),
                             ("m2", "gumbel", 4.0), ("m2", "enum --jit", 9.0)]] + [
        {**base, "section": "scaling", "model": "m2", "inference": "enum", "step_ms": 11.0,
         "examples_per_s": 1.0, "speedup_vs_enum": 1.0}]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_bench_writes_files_only_where_out_says(tmp_path, monkeypatch, capsys, json_flag):
    monkeypatch.setattr(bench, "run", lambda plan, log: _bench_rows())
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert main(["bench", *json_flag]) == 0  # the full bench once wrote into the cwd
        assert list(tmp_path.iterdir()) == []  # nothing written in the working directory
        out = capsys.readouterr().out
        assert ("m2/enum --jit 0.82" in out) if not json_flag else json.loads(out)
        assert main(["bench", *json_flag, "--out", "here"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == [
        "bench.json", "bench.md", "scaling_in_k.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["here"]


def test_classify_is_in_evaluation_mode_and_leaves_the_pair_as_it_was(tiny):
    pair, _ = small_pair(batch_norm=True, input_dropout=0.5)
    pair.train()
    for step in range(3):  # running statistics away from their initial values
        pair.loss_and_grads(make_batch(tiny, seed=step), step)
    pair.zero_grad()
    buffers = {name: b.clone() for name, b in pair.named_buffers()}
    images = tiny.test.x[:64].reshape(64, 28, 28)
    first, second = pair.classify(images), pair.classify(images)
    torch.testing.assert_close(first, second)  # no dropout, no batch statistics
    torch.testing.assert_close(first.softmax(-1), evaluate.predict(pair, images))
    evaluate.accuracy(pair, images, tiny.test.y[:64])
    evaluate.kl_per_dimension(pair, images)
    evaluate.posterior_labels(pair, images)
    pair.loss(make_batch(tiny))
    assert pair.training and not first.requires_grad
    for name, b in pair.named_buffers():
        torch.testing.assert_close(b, buffers[name], msg=f"{name} moved")
    pair.eval()
    with torch.no_grad():
        torch.testing.assert_close(pair.guide.classify(images.flatten(1)), first)


def test_images_of_the_wrong_shape_are_refused_in_one_line(tiny):
    pair, _ = small_pair()
    with pytest.raises(ValueError, match=r"images must have shape \(B, 784\)") as error:
        pair.classify(torch.zeros(4, 27, 27))
    assert "\n" not in str(error.value)


def test_the_best_validation_weights_are_kept_and_loaded_by_default(tmp_path):
    """best.pt holds the weights summary.json's test_accuracy was measured with;
    checkpoint.pt the last ones."""
    settings = small_settings(epochs=3, batch_size=50, labelled_batch_size=10, lr=3e-3,
                              eval_batch_size=500, out=str(tmp_path), figures=False)
    summary = train(settings)
    assert (tmp_path / BEST_FILE).exists()
    data = data_lib.load("synthetic", None, settings.seed)
    config = Settings.from_dict(json.loads((tmp_path / "config.json").read_text()))
    pair = build(config, data.num_classes, 784)
    loaded = load_weights(pair, tmp_path)
    assert loaded["which"] == "best" and loaded["epoch"] == summary["best_epoch"]
    assert evaluate.accuracy(pair, data.test.x, data.test.y) == summary["test_accuracy"]
    # the KL per dimension each epoch's row recorded identifies that epoch's weights
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kl = lambda: evaluate.kl_per_dimension(pair, data.valid.x[:1000]).tolist()
    assert summary["best_epoch"] < len(rows) == 3  # the synthetic classes are learnt at once
    assert kl() == pytest.approx(rows[summary["best_epoch"] - 1]["kl_per_dim"], abs=2e-5)
    assert kl() != pytest.approx(rows[-1]["kl_per_dim"], abs=2e-5)
    assert load_weights(pair, tmp_path, "last")["which"] == "last"
    assert evaluate.accuracy(pair, data.test.x, data.test.y) == summary["test_accuracy_last"]
    assert kl() == pytest.approx(rows[-1]["kl_per_dim"], abs=2e-5)
    (tmp_path / BEST_FILE).unlink()  # a run written before best.pt: the last weights
    assert load_weights(pair, tmp_path)["which"] == "last"
