"""What the experiment scripts share: turning settings into a `ppl-ssvae train`
command, and an environment that splits the cores between parallel runs."""

from __future__ import annotations

import os
import sys


def train_command(settings: dict, *extra: str) -> list[str]:
    """``python -m ppl_ssvae train`` with one flag per setting (lists as 300,300)."""
    cmd = [sys.executable, "-m", "ppl_ssvae", "train", "--no-progress", *extra]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list | tuple):
            cmd += [flag, ",".join(str(v) for v in value)]
        else:
            cmd += [flag, str(value)]
    return cmd


def worker_env(jobs: int) -> dict:
    """Split the cores between parallel runs: torch's default of one thread per core in
    every process oversubscribes the machine and slows each run many times over."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    return env
