"""Measure training choices side by side: one short run per variant, in parallel.

    python -m experiments.sweep experiments/sweeps/m2-enum.json --epochs 30 --jobs 8 \
        --time-limit 600 --out /tmp/sweep

A sweep file maps a variant name to settings overrides, e.g.
``{"batch-norm": {"batch_norm": true}}``; every variant starts from the file's
``"base"`` entry. Each variant trains with ``ppl-ssvae train``; runs still going at
``--time-limit`` seconds are stopped, and the table reports what their
``metrics.jsonl`` holds: epochs reached and validation accuracy by epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.runs import train_command, worker_env
from ppl_ssvae.io import write_json, write_text


def run_variant(name: str, settings: dict, deadline: float, jobs: int) -> int:
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "wb") as log:
        process = subprocess.Popen(train_command(settings), stdout=log, stderr=subprocess.STDOUT,
                                   env=worker_env(jobs))
        try:
            return process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9


def read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(variants: dict[str, dict], out: Path, checkpoints=(1, 5, 10, 20, 30, 50, 100)) -> str:
    rows, table = {}, []
    for name in variants:
        metrics = read_metrics(out / name)
        accuracy = [m["valid_accuracy"] for m in metrics]
        rows[name] = {"epochs": len(accuracy), "valid_accuracy": accuracy,
                      "seconds_per_epoch": (sum(m["seconds"] for m in metrics) / len(metrics)
                                            if metrics else None),
                      "settings": variants[name]}
    shown = [c for c in checkpoints if any(r["epochs"] >= c for r in rows.values())]
    table.append("| variant | epochs | best valid. % | " + " | ".join(f"ep {c}" for c in shown)
                 + " | s/epoch |")
    table.append("|---" * (len(shown) + 4) + "|")
    for name, row in sorted(rows.items(), key=lambda kv: -max(kv[1]["valid_accuracy"] or [0])):
        acc = row["valid_accuracy"]
        cells = [f"{100 * acc[c - 1]:.2f}" if len(acc) >= c else "" for c in shown]
        best = f"{100 * max(acc):.2f}" if acc else "n/a"
        spe = row["seconds_per_epoch"]
        table.append(f"| {name} | {row['epochs']} | {best} | " + " | ".join(cells)
                     + f" | {'' if spe is None else f'{spe:.1f}'} |")
    write_json(out / "sweep.json", rows)
    text = "\n".join(table) + "\n"
    write_text(out / "sweep.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="JSON file: {variant: settings overrides}")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds for the sweep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args(argv)

    spec = json.loads(args.sweep.read_text())
    base = spec.pop("base", {})
    variants = {name: {**base, **overrides} for name, overrides in spec.items()
                if not args.only or name in args.only}
    deadline = time.time() + args.time_limit
    for name, settings in variants.items():
        settings.update(epochs=args.epochs, device=args.device, seed=args.seed,
                        out=str(args.out / name))
        if args.data_dir:
            settings["data_dir"] = args.data_dir
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = dict(zip(variants, pool.map(lambda kv: run_variant(kv[0], kv[1], deadline, args.jobs),
                                            variants.items()), strict=True))
    print(report(variants, args.out))
    failed = [name for name, code in codes.items() if code not in (0, -9)]
    if failed:
        print(f"failed: {', '.join(failed)} (see OUT/NAME/train.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
