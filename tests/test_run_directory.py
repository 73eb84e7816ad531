"""One run per output directory, and writes that fail cleanly.

A run holds an OS lock on its ``--out`` for as long as it lasts: a second run there is
refused in one line naming the first (real processes: the first stalled halfway
through writing its checkpoint, whose temporary file the second must leave alone),
and the lock goes with the process however it ends. A new run is refused where
another run left its outputs; a resumed run may not go back (fewer --epochs or
--max-steps than its checkpoint has done). A write that fails (a full disk, a
directory in the way) names the file and the cause and keeps the last checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import FAST, assert_error, one_thread, train_cli  # noqa: F401 (fixture)
from ppl_ssvae.checkpoint import read_checkpoint
from ppl_ssvae.cli import main
from ppl_ssvae.io import LOCK_NAME, WriteError, write_json

train_module = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function
HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ppl_ssvae", "train", *FAST, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-step")
    assert main(["train", *FAST, "--max-steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(two_step_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    return out


# --------------------------------------------------------------------------- the lock

def test_a_second_run_is_refused_while_the_first_holds_the_directory(tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "stalled"
    first = subprocess.Popen([sys.executable, str(HERE / "stall_run.py"), "checkpoint", "1",
                              str(marker), "--", *FAST, "--max-steps", "6", "--checkpoint-every",
                              "2", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():  # the first is halfway through writing its checkpoint
            if first.poll() is not None:
                pytest.fail(f"the first run ended before stalling: {first.stderr.read().decode()}")
            assert time.monotonic() < deadline, "the first run never reached its checkpoint"
            time.sleep(0.05)
        half_written = list(out.glob(".checkpoint.pt.*.tmp"))
        assert half_written

        for extra in ([], ["--resume"]):
            second = subprocess.run(command(out, "--max-steps", "2", *extra), capture_output=True,
                                    text=True, env=ENV, timeout=120)
            assert_error(second.returncode, second.stderr,
                         f"--out {out} is in use by another run (pid {first.pid} on ",
                         "stall_run.py checkpoint 1", "since ",
                         "): wait for it to end, or choose another --out")
        assert half_written == list(out.glob(".checkpoint.pt.*.tmp"))  # left alone
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [LOCK_NAME, "config.json", "metrics.jsonl", "evaluations.jsonl", half_written[0].name])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()

    # the kernel let go of the lock with the killed process: the run can go on
    done = subprocess.run(command(out, "--max-steps", "2", "--resume"), capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp"))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_the_lock_is_let_go_when_a_run_fails_in_this_process(capsys, tmp_path):
    out = tmp_path / "run"
    assert_error(*train_cli(capsys, "--dataset", "nonexistent", "--out", str(out)),
                 "unknown dataset 'nonexistent'")
    code, err = train_cli(capsys, "--max-steps", "1", "--out", str(out))
    assert code == 0, err


# --------------------------------------------------------------------------- another run's outputs

def test_a_new_run_in_another_runs_directory_is_refused(capsys, run_copy):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    assert_error(*train_cli(capsys, "--max-steps", "2", "--seed", "1", "--out", str(run_copy)),
                 f"--out {run_copy} holds the outputs of another run (config.json, metrics.jsonl, "
                 "summary.json, checkpoint.pt): continue that run with --resume, or choose "
                 "another --out")
    after = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == {
        k: v for k, v in before.items() if k != LOCK_NAME}


def test_a_resumed_run_may_not_go_back(capsys, tmp_path):
    out = tmp_path / "run"
    two_epochs = ("--epochs", "2", "--batch-size", "1000", "--out", str(out))  # 2 steps an epoch
    assert train_cli(capsys, *two_epochs)[0] == 0
    config = (out / "config.json").read_text()
    assert_error(*train_cli(capsys, *two_epochs, "--resume", "--epochs", "1"),
                 f"--epochs 1 is fewer than the 2 epochs {out / 'checkpoint.pt'} has run: resume "
                 "with --epochs 2 or more, or start over in another --out")
    assert_error(*train_cli(capsys, *two_epochs, "--resume", "--max-steps", "3"),
                 f"--max-steps 3 is fewer than the 4 steps {out / 'checkpoint.pt'} has taken")
    assert (out / "config.json").read_text() == config
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


# --------------------------------------------------------------------------- failed writes

def test_a_directory_where_an_output_goes_is_refused_before_training(capsys, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint.pt").mkdir(parents=True)
    assert_error(*train_cli(capsys, "--max-steps", "2", "--out", str(out)),
                 f"--out {out} has a directory where the run writes its checkpoint.pt: move it, "
                 "or choose another --out")
    assert not (out / "config.json").exists()


def test_a_write_onto_a_directory_names_the_file(tmp_path):
    (tmp_path / "summary.json").mkdir()
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'summary.json'} \\(Is a "
                       "directory\\)"):
        write_json(tmp_path / "summary.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_summary_that_cannot_be_written_keeps_the_checkpoint(capsys, run_copy, monkeypatch):
    """summary.json turns into a directory while the run trains."""
    summary = train_module._summary

    def directory_in_the_way(*args, **kwargs):
        (run_copy / "summary.json").unlink()
        (run_copy / "summary.json").mkdir()
        return summary(*args, **kwargs)

    monkeypatch.setattr(train_module, "_summary", directory_in_the_way)
    assert_error(*train_cli(capsys, "--max-steps", "3", "--resume", "--out", str(run_copy)),
                 f"cannot write {run_copy / 'summary.json'} (Is a directory)",
                 "once that is fixed, rerun with --resume")
    assert read_checkpoint(run_copy / "checkpoint.pt")["step"] == 3


def limit_file_size():
    """In the child: files may not grow beyond 1 MB (a full disk, as far as the writer can
    tell), and crossing the limit is an error (EFBIG), not the signal that kills."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_checkpoint_that_does_not_fit_keeps_the_last_one(run_copy):
    """torch.save's writer fails (its RuntimeError wraps the file's OSError) in a real
    process with a file-size limit smaller than a checkpoint."""
    before = (run_copy / "checkpoint.pt").read_bytes()
    assert len(before) > 1 << 20
    done = subprocess.run(command(run_copy, "--max-steps", "3", "--resume"), capture_output=True,
                          text=True, env=ENV, timeout=120, preexec_fn=limit_file_size)
    assert_error(done.returncode, done.stderr,
                 f"cannot write {run_copy / 'checkpoint.pt'} (File too large)",
                 "any earlier checkpoint.pt is left as it was; once that is fixed, rerun with "
                 "--resume to go on from the last checkpoint")
    assert (run_copy / "checkpoint.pt").read_bytes() == before
    assert not list(run_copy.glob(".*.tmp"))
