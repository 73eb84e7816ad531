"""Untrusted or unusable checkpoints are refused with one line; a non-finite loss
or gradient stops the run (exit 3) keeping the last good checkpoint, or with
``--on-nan skip`` is undone and counted; outputs are written whole or not at all.
(Resuming exactly after a kill: ``test_resume.py``.)"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clitools import FAST, RunsCode, assert_error, one_thread, train_cli  # noqa: F401 (fixture)
from ppl_ssvae.checkpoint import VERSION, read_checkpoint
from ppl_ssvae.cli import main
from ppl_ssvae.io import WriteError, atomic_write, run_directory, write_text
from ppl_ssvae.objective import SSVAE

train_module = importlib.import_module("ppl_ssvae.train")


# --------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    """A finished two-step run: its directory holds a real checkpoint."""
    out = tmp_path_factory.mktemp("two-step")
    assert main(["train", *FAST, "--max-steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(two_step_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    return out


def resume(capsys, out: Path, *argv: str) -> tuple[int, str]:
    return train_cli(capsys, "--max-steps", "2", "--resume", "--out", str(out), *argv)


def rewrite_checkpoint(path: Path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_truncated_checkpoint_is_refused(capsys, run_copy):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_error(*resume(capsys, run_copy), f"{path} is not a readable checkpoint (",
                 "): it is truncated or corrupt; delete it to start over, or choose another --out")


def test_corrupt_checkpoint_is_refused(capsys, run_copy):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(os.urandom(4096))
    assert_error(*resume(capsys, run_copy), f"{path} is not a readable checkpoint",
                 "truncated or corrupt")


def test_checkpoint_that_would_run_code_is_refused(capsys, run_copy, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"version": VERSION, "networks": RunsCode(marker)}, run_copy / "checkpoint.pt")
    assert_error(*resume(capsys, run_copy), f"refusing {run_copy / 'checkpoint.pt'}: it names "
                 f"{os.system.__module__}.system, and a ppl-ssvae checkpoint holds only tensors "
                 "and plain values (loading it could run code)")
    assert not marker.exists()


def test_foreign_file_is_refused(capsys, run_copy):
    torch.save({"weights": torch.zeros(3)}, run_copy / "checkpoint.pt")
    assert_error(*resume(capsys, run_copy), "is not a ppl-ssvae checkpoint: delete it or choose "
                 "another --out")


def test_checkpoint_of_another_version_is_refused(capsys, run_copy):
    rewrite_checkpoint(run_copy / "checkpoint.pt", lambda p: p.update(version=VERSION - 1))
    assert_error(*resume(capsys, run_copy), f"is a version {VERSION - 1} checkpoint and this "
                 f"ppl-ssvae reads version {VERSION}")


def test_checkpoint_whose_networks_do_not_fit_is_refused(capsys, run_copy):
    def drop_a_weight(payload):
        del payload["networks"]["guide.classifier.first.linears.0.weight"]

    rewrite_checkpoint(run_copy / "checkpoint.pt", drop_a_weight)
    assert_error(*resume(capsys, run_copy), "does not fit the networks of --model m2",
                 "Missing key(s)")


@pytest.mark.parametrize("changed, phrase", [
    (["--hidden", "64"], "is from another run (--hidden 32, not --hidden 64): resume with the "
                         "settings of that run, or choose another --out"),
    (["--inference", "score"], "(--inference enum, not --inference score)"),
    (["--z-dim", "8", "--seed", "1"], "(--z-dim 4 --seed 0, not --z-dim 8 --seed 1)"),
])
def test_resume_under_other_settings_is_refused(capsys, run_copy, changed, phrase):
    before = (run_copy / "checkpoint.pt").read_bytes()
    assert_error(*resume(capsys, run_copy, *changed), phrase)
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_resume_may_change_when_to_stop(capsys, run_copy):
    code, _ = train_cli(capsys, "--max-steps", "3", "--resume", "--out", str(run_copy))
    assert code == 0
    assert json.loads((run_copy / "summary.json").read_text())["steps"] == 3
    assert read_checkpoint(run_copy / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize("argv", [
    ["--lr", "0"],
    ["--resume", "--max-steps", "2"],  # into a directory whose checkpoint is truncated
])
def test_command_line_errors_have_no_traceback(run_copy, argv):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ppl_ssvae", "train", *FAST, *argv,
                           "--out", str(run_copy)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --------------------------------------------------------------------------- numerical faults

def poison_batches(monkeypatch, calls_to_poison: set[int]) -> None:
    """Put a NaN pixel into the unlabelled images of the given draws (0 = this
    process's first), after binarisation, as corrupt data would arrive."""
    draw_batch, calls = train_module.draw_batch, [0]

    def poisoned(*args, **kwargs):
        batch = draw_batch(*args, **kwargs)
        if calls[0] in calls_to_poison:
            batch.x_u[0, 0] = float("nan")
        calls[0] += 1
        return batch

    monkeypatch.setattr(train_module, "draw_batch", poisoned)


def test_nan_in_a_batch_stops_the_run_and_keeps_the_checkpoint(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    poison_batches(monkeypatch, {3})
    code, err = train_cli(capsys, "--max-steps", "6", "--checkpoint-every", "2", "--out", str(out))
    # with Pyro's validation off in the training step the NaN shows first in a gradient
    assert_error(code, err, f"is not finite; {out / 'checkpoint.pt'} (step 2) is kept: rerun with "
                 "--resume --on-nan skip to skip such steps, or start over with a lower --lr or a "
                 "--clip-norm", status=3)
    assert "ppl-ssvae: error: step 3: the " in err
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not (out / "summary.json").exists()

    # the advice works: the resumed run (whose draw 1 is step 3) skips the step
    poison_batches(monkeypatch, {1})
    code, err = train_cli(capsys, "--max-steps", "6", "--checkpoint-every", "2", "--out", str(out),
                          "--resume", "--on-nan", "skip")
    assert code == 0, err
    assert "ppl-ssvae: step 3 skipped: the " in err and "is not finite" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_skipped_steps_are_counted_and_undone(capsys, tmp_path, monkeypatch):
    """Batch norm has folded the NaN batch into its running statistics before the
    loss is seen: a skipped step must put them back."""
    out = tmp_path / "run"
    poison_batches(monkeypatch, {2, 5, 13})
    code, err = train_cli(capsys, "--batch-norm", "--on-nan", "skip", "--epochs", "2",
                          "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [2, 1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 3
    for row in rows:
        assert np.isfinite(row["loss"]) and np.isfinite(row["kl_per_dim"]).all()
    networks = read_checkpoint(out / "checkpoint.pt")["networks"]
    batch_norm_statistics = [v for k, v in networks.items() if "running_" in k]
    assert batch_norm_statistics and all(torch.isfinite(v).all() for v in batch_norm_statistics)


def test_an_epoch_with_every_step_skipped_has_no_loss(capsys, tmp_path, monkeypatch):
    """Its loss terms are unknown, not 0.0; the figures are drawn all the same."""
    out = tmp_path / "run"
    poison_batches(monkeypatch, set(range(10)))  # the first epoch's 10 steps
    code, err = train_cli(capsys, "--on-nan", "skip", "--epochs", "2", "--figures",
                          "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [10, 0]
    assert [row[key] for key in ("loss", "negative_elbo", "classifier") for row in rows[:1]] == [
        None, None, None]
    assert all(np.isfinite(rows[1][key]) for key in ("loss", "negative_elbo", "classifier"))
    assert (out / "learning_curves.png").exists()


@pytest.mark.parametrize("fault, phrase", [
    ("loss", "step 1: the negative ELBO term of the loss is nan"),
    ("gradient", "step 1: the gradient of guide.classifier.first.linears.0.weight is not finite"),
])
def test_guard_names_the_term(capsys, tmp_path, monkeypatch, fault, phrase):
    loss_and_grads = SSVAE.loss_and_grads

    def faulty(self, batch, step=0):
        terms = loss_and_grads(self, batch, step)
        if step == 1 and fault == "loss":
            terms["negative_elbo"] = float("nan")
        if step == 1 and fault == "gradient":
            self.guide.classifier.first.linears[0].weight.grad[0, 0] = float("inf")
        return terms

    monkeypatch.setattr(SSVAE, "loss_and_grads", faulty)
    code, err = train_cli(capsys, "--max-steps", "3", "--out", str(tmp_path))
    assert_error(code, err, phrase, "no checkpoint had been written yet", status=3)


# --------------------------------------------------------------------------- atomic files

def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
    target = tmp_path / "summary.json"
    write_text(target, "old\n")

    def fails_halfway(f):
        f.write(b"new and incomplete")
        raise OSError("disk full")

    with pytest.raises(WriteError, match=f"cannot write {target} \\(disk full\\)"):
        atomic_write(target, fails_halfway)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    write_text(tmp_path / "config.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_stray_temporary_files_of_a_killed_run_are_removed(tmp_path):
    stray = tmp_path / ".checkpoint.pt.k3_x9abc.tmp"
    keep = [tmp_path / ".my-notes.tmp", tmp_path / "notes.txt", tmp_path / "checkpoint.pt"]
    for path in [stray, *keep]:
        path.write_text("")
    with run_directory(tmp_path, resume=True):
        assert not stray.exists() and all(path.exists() for path in keep)
