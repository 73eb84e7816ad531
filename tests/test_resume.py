"""A run killed with SIGKILL and resumed ends exactly as the uninterrupted run:
the same metrics.jsonl rows and summary.json numbers, timing fields aside.

Real processes, really killed: ``tests/stall_run.py`` runs the command and stalls
at a chosen point (before a step, or halfway through writing a checkpoint), the
test kills it there. The run samples y by the score function with TraceGraph's
baseline (Pyro's param store), uses batch norm (buffers), input dropout and
binarisation (the global torch RNG), a decaying learning rate (the scheduler) and
mid-epoch checkpoints (the epoch's data order and running sums): everything a
resume has to restore.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppl_ssvae.checkpoint import read_checkpoint

HERE = Path(__file__).parent
TIMING = {"seconds", "examples_per_second", "seconds_per_epoch", "train_cpu_seconds",
          "train_wall_seconds"}
STEPS_PER_EPOCH = 10  # 2,000 synthetic images, batches of 200
RUN = ["--dataset", "synthetic", "--hidden", "32", "--z-dim", "4", "--batch-size", "200",
       "--labelled-batch-size", "50", "--eval-batch-size", "500", "--epochs", "3",
       "--checkpoint-every", "4", "--inference", "tracegraph", "--batch-norm",
       "--input-dropout", "0.2", "--lr-decay", "0.9", "--seed", "3", "--no-progress",
       "--no-figures"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run(out: Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ppl_ssvae", "train", *RUN, "--out", str(out),
                           *extra], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr


def run_and_kill(out: Path, where: str, n: int, *extra: str) -> None:
    """Start the run, wait until it stalls at the n-th step or checkpoint, SIGKILL it."""
    marker = out.parent / f"{out.name}.stalled"
    marker.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, str(HERE / "stall_run.py"), where, str(n),
                                str(marker), "--", *RUN, "--out", str(out), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"the run ended before stalling: {process.stderr.read().decode()}")
            assert time.monotonic() < deadline, "the run never reached the stall point"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def results(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING}
    return [drop(row) for row in rows], drop(summary)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[dict], dict]:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(out)
    return results(out)


def test_killed_twice_and_resumed_matches_the_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"

    # killed in the middle of the first epoch, before step 6: the last checkpoint is step 4's
    run_and_kill(out, "step", 7)
    saved = read_checkpoint(out / "checkpoint.pt")
    assert (saved["step"], saved["epoch"], saved["in_epoch"]["position"]) == (4, 0, 4)
    assert (out / "metrics.jsonl").read_text() == ""

    # resumed, and killed again halfway through writing its second checkpoint (the
    # end of epoch 1, step 10): the file on disk is still step 8's, whole
    run_and_kill(out, "checkpoint", 2, "--resume")
    saved = read_checkpoint(out / "checkpoint.pt")
    assert (saved["step"], saved["epoch"], saved["in_epoch"]["position"]) == (8, 0, 8)
    assert list(out.glob(".checkpoint.pt.*.tmp")), "the half-written checkpoint was a temp file"
    assert (out / "metrics.jsonl").read_text() == ""  # never ahead of the checkpoint

    run(out, "--resume")
    assert not list(out.glob(".*.tmp"))
    rows, summary = results(out)
    expected_rows, expected_summary = uninterrupted
    assert [row["step"] for row in rows] == [10, 20, 30]
    assert rows == expected_rows
    assert summary == expected_summary


def test_killed_between_epochs_and_resumed_with_more_epochs(tmp_path, uninterrupted):
    """A two-epoch run killed at the start of its second epoch, resumed for three."""
    out = tmp_path / "run"
    run_and_kill(out, "step", STEPS_PER_EPOCH + 1, "--checkpoint-every", "0", "--epochs", "2")
    saved = read_checkpoint(out / "checkpoint.pt")
    assert (saved["step"], saved["epoch"], saved["in_epoch"]) == (10, 1, None)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1

    run(out, "--resume", "--checkpoint-every", "0")
    assert results(out) == uninterrupted
