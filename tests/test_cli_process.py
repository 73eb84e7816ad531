"""The command as a shell runs it: Ctrl-C while it is still importing torch, output
into a pipe that was closed early, a terminal that cannot show the path. One line
or none, the documented status, never a traceback. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import FAST

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def ppl_ssvae(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ppl_ssvae", *argv]


def interrupt_while_importing() -> subprocess.CompletedProcess | None:
    """``ppl-ssvae list``, sent SIGINT once torch's libraries are being loaded; None when
    the command had already finished its work (a loaded machine can deschedule this
    test past the whole import): the signal came too late to test anything."""
    process = subprocess.Popen(ppl_ssvae("list"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    try:  # wait until torch's libraries are being loaded: the import is under way
        while "/torch/" not in maps.read_text():
            assert process.poll() is None, "the command ended before torch was imported"
            assert time.monotonic() < deadline, "torch was never imported"
            time.sleep(0.01)
    except FileNotFoundError:
        process.kill()
        process.communicate()
        pytest.skip("no /proc to see the import under way")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0 and out.strip() and not err:  # it had listed everything
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_while_importing_is_quiet():
    for _ in range(5):
        done = interrupt_while_importing()
        if done is not None:
            break
    else:
        pytest.fail("five times the command finished before SIGINT reached it")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["ppl-ssvae: interrupted"]


def run_into_a_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """``ppl-ssvae ARGV | true``, with the reader gone before the first byte."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, env=ENV,
                              timeout=120)
    finally:
        os.close(write)


def test_list_into_a_closed_pipe():
    done = run_into_a_closed_pipe(ppl_ssvae("list"))
    assert (done.returncode, done.stderr) == (141, "")


def test_train_into_a_closed_pipe_writes_its_outputs(tmp_path):
    done = run_into_a_closed_pipe(ppl_ssvae("train", *FAST, "--max-steps", "2",
                                            "--out", str(tmp_path / "run")))
    assert (done.returncode, done.stderr) == (141, "")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


def test_a_path_the_terminal_cannot_encode(tmp_path):
    out = tmp_path / "résultats"
    done = subprocess.run(ppl_ssvae("train", *FAST, "--max-steps", "2", "--out", str(out)),
                          capture_output=True, text=True, timeout=120,
                          env={**ENV, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        f"outputs and figures are in {tmp_path}/r\\xe9sultats/")
    assert (out / "summary.json").exists()
