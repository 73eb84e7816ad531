"""Run ``ppl-ssvae train`` in this process and stall at a chosen point, so that a
test can kill it with SIGKILL exactly there (``tests/test_resume.py``)::

    python tests/stall_run.py step N MARKER -- TRAIN-ARGS...
        stall just before the N-th step this process takes (N = 1 is its first)
    python tests/stall_run.py checkpoint N MARKER -- TRAIN-ARGS...
        stall halfway through writing the N-th checkpoint, its first bytes on disk

On reaching the point it creates the file MARKER and sleeps; the test waits for
MARKER and kills the process. Nothing else differs from the real command.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from ppl_ssvae import checkpoint as checkpoint_lib
from ppl_ssvae.cli import main

train_lib = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function


def stall(marker: Path) -> None:
    marker.write_text("stalled\n")
    time.sleep(600)
    raise SystemExit("stall_run: nobody killed me")


def stall_at_step(n: int, marker: Path) -> None:
    draw_batch, calls = train_lib.draw_batch, [0]

    def counting_draw_batch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            stall(marker)
        return draw_batch(*args, **kwargs)

    train_lib.draw_batch = counting_draw_batch


def stall_in_checkpoint(n: int, marker: Path) -> None:
    atomic_write, calls = checkpoint_lib.atomic_write, [0]

    def half_then_stall(path, write):
        if Path(path).name != "checkpoint.pt":  # best.pt is written by the same function
            return atomic_write(path, write)
        calls[0] += 1
        if calls[0] != n:
            return atomic_write(path, write)

        def write_half(f):
            import io

            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            stall(marker)

        return atomic_write(path, write_half)

    checkpoint_lib.atomic_write = half_then_stall


if __name__ == "__main__":
    where, n, marker, dashes, *argv = sys.argv[1:]
    assert dashes == "--", __doc__
    {"step": stall_at_step, "checkpoint": stall_in_checkpoint}[where](int(n), Path(marker))
    sys.exit(main(["train", *argv]))
