"""What the bad-input and reliability tests share: a fast training command run
in this process, and the shape of a user error (one line, exit status 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ppl_ssvae.cli import main

FAST = ["--dataset", "synthetic", "--hidden", "32", "--z-dim", "4", "--batch-size", "200",
        "--labelled-batch-size", "50", "--eval-batch-size", "500", "--no-progress", "--no-figures"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two intra-op threads on two busy cores make a small step 20 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_cli(capsys, *argv: str) -> tuple[int, str]:
    """``ppl-ssvae train FAST... ARGV``: its exit status and its stderr."""
    code = main(["train", *FAST, *argv])
    return code, capsys.readouterr().err


def assert_error(code: int, err: str, *phrases: str, status: int = 2) -> str:
    """One line, ``ppl-ssvae: error: ...``, holding every phrase; the exit status."""
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("ppl-ssvae: error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
