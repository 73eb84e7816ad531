"""Training end to end: the CLI writes every output, and a short run on real
MNIST classifies clearly better than chance."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import small_settings
from ppl_ssvae import train

OUTPUTS = ["config.json", "metrics.jsonl", "summary.json", "checkpoint.pt",
           "learning_curves.png", "samples.png", "kl_per_dim.png"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ppl_ssvae", *args], capture_output=True,
                          text=True, timeout=300)


def test_train_writes_every_output(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--dataset", "synthetic", "--hidden", "32", "--z-dim", "4",
                     "--epochs", "2", "--max-steps", "30", "--batch-size", "100",
                     "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "m2" and config["max_steps"] == 30 and config["hidden"] == [32]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 30  # 20 steps an epoch
    for key in ("loss", "negative_elbo", "classifier", "valid_accuracy", "seconds", "kl_per_dim"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_accuracy", "test_accuracy_last", "best_valid_accuracy", "best_epoch",
                "seconds_per_epoch", "examples_per_second", "test_elbo"):
        assert summary[key] is not None, key
    assert summary["best_valid_accuracy"] == max(r["valid_accuracy"] for r in rows)


def test_list_names_every_model_and_its_inference_methods():
    result = run_cli("list")
    assert result.returncode == 0
    line = next(row for row in result.stdout.splitlines() if row.startswith("m2 "))
    assert "enum" in line and "gumbel" in line


def test_help_documents_every_setting():
    result = run_cli("train", "--help")
    for flag in ("--model", "--inference", "--labels", "--epochs", "--seed", "--out",
                 "--max-steps", "--batch-size", "--lr", "--data-dir", "--dataset", "--resume"):
        assert flag in result.stdout


def test_a_short_run_on_real_mnist_beats_chance_clearly(tmp_path):
    settings = small_settings(dataset="mnist", hidden=(128,), z_dim=16, max_steps=150,
                              epochs=1, classifier_weight=1.0, out=str(tmp_path), seed=0)
    summary = train(settings)
    assert summary["best_valid_accuracy"] > 0.6  # chance is 0.1
    assert summary["test_accuracy"] > 0.6


def test_a_cpu_run_is_repeatable_with_its_seed(tmp_path):
    settings = small_settings(max_steps=10, epochs=1, batch_size=40)
    first = train(settings.replace(out=str(tmp_path / "a")))
    second = train(settings.replace(out=str(tmp_path / "b")))
    first_rows = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    second_rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda row: {k: v for k, v in json.loads(row).items()
                         if k not in ("seconds", "examples_per_second")}
    assert [strip(r) for r in first_rows] == [strip(r) for r in second_rows]
    assert first["test_accuracy"] == second["test_accuracy"]
