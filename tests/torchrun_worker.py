"""Run ``ppl-ssvae train`` as one torchrun worker and record what it does, for
``tests/test_distributed.py``::

    torchrun --standalone --nproc_per_node 2 tests/torchrun_worker.py \
        RECORD [STALL_RANK STALL_STEP] -- TRAIN-ARGS...

Every file the worker writes goes to ``RECORD/writes-rank{R}.txt`` (one path a line),
and at the end its networks' state and Pyro's side parameters to
``RECORD/state-rank{R}.pt``. With STALL_RANK and STALL_STEP, that rank stalls just
before its STALL_STEP-th step (1 is its first), writes its pid to ``RECORD/stalled``
and sleeps, for the test to kill it. Nothing else differs from the real command.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import torch

from ppl_ssvae import checkpoint as checkpoint_lib
from ppl_ssvae import io
from ppl_ssvae.cli import main

train_lib = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function
RANK = int(os.environ["RANK"])


def record_writes(log: Path) -> None:
    def logged(write):
        def atomic_write(path, *args, **kwargs):
            with log.open("a") as f:
                f.write(f"{Path(path).resolve()}\n")
            return write(path, *args, **kwargs)
        return atomic_write

    io.atomic_write = logged(io.atomic_write)
    checkpoint_lib.atomic_write = logged(checkpoint_lib.atomic_write)


def record_pair(built: list) -> None:
    build = train_lib.build

    def recording_build(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    train_lib.build = recording_build


def stall_at_step(n: int, marker: Path) -> None:
    draw_batch, calls = train_lib.draw_batch, [0]

    def counting_draw_batch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            marker.write_text(f"{os.getpid()}\n")
            time.sleep(600)
            raise SystemExit("torchrun_worker: nobody killed me")
        return draw_batch(*args, **kwargs)

    train_lib.draw_batch = counting_draw_batch


if __name__ == "__main__":
    dashes = sys.argv.index("--")
    record, *stall = sys.argv[1:dashes]
    record = Path(record)
    record_writes(record / f"writes-rank{RANK}.txt")
    built: list = []
    record_pair(built)
    if stall and int(stall[0]) == RANK:
        stall_at_step(int(stall[1]), record / "stalled")
    code = main(["train", *sys.argv[dashes + 1:]])
    if built:
        torch.save({"networks": built[-1].state_dict(),
                    "pyro": checkpoint_lib.pyro_side_params()}, record / f"state-rank{RANK}.pt")
    sys.exit(code)
