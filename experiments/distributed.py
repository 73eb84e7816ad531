"""Data-parallel throughput: examples per second with 1 and 2 torchrun processes, and
what the parameter count predicts for more workers on a network.

    python -m experiments.distributed --steps 120 --out experiments/results/distributed

Each row is one ``torchrun --standalone --nproc_per_node N -m ppl_ssvae train`` with
the default networks (300-300 maxout, batch norm, z of 50) on MNIST-shaped synthetic
data, one thread a process, the global batch of 100 + 100 split over the processes;
the throughput is the run's own ``examples_per_second`` (training steps only, not
start-up or evaluation). With one process torchrun starts no process group: that row
is the plain single-process loop.

On paper: one step all-reduces the gradients (4 bytes a parameter, plus the
batch-norm statistics), which a ring all-reduce over R workers does by sending and
receiving 2 (R - 1) / R of the buffer per worker, plus 2 (R - 1) latencies. Against
the measured single-process step it predicts the speed-up of R workers at
``--bandwidth`` Gb/s: with the global batch fixed (strong scaling, step T / R + comm)
and with 100 + 100 examples per worker (weak scaling, the global batch R times
larger: efficiency T / (T + comm)).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ppl_ssvae.config import Settings
from ppl_ssvae.io import write_json, write_text
from ppl_ssvae.registry import build

PAIRS = (("m2", "enum"), ("m2", "gumbel-cat-kl"))
WORKERS = (8, 64)
LATENCY_S = 50e-6  # per message of the ring, on an ordinary data-centre Ethernet


def measure(model: str, inference: str, processes: int, steps: int, out: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m", "ppl_ssvae", "train",
               "--model", model, "--inference", inference, "--dataset", "synthetic",
               "--epochs", "1", "--max-steps", str(steps), "--checkpoint-every", "0",
               "--no-figures", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"model": model, "inference": inference, "processes": processes, "steps": steps,
            "examples_per_second": summary["examples_per_second"],
            "step_ms": 1000 * 200 / summary["examples_per_second"]}


def exchanged_bytes(model: str, inference: str) -> tuple[int, int]:
    """(parameters, bytes of the buffer one step all-reduces) for the default networks."""
    pair = build(Settings(model=model, inference=inference), 10, 784)
    parameters = sum(p.numel() for p in pair.parameters())
    buffers = sum(b.numel() for b in pair.buffers() if b.is_floating_point())
    return parameters, 4 * (parameters + buffers + len(list(pair.parameters())) + 3)


def predict(step_s: float, buffer_bytes: int, workers: int, bandwidth_gbit: float) -> dict:
    comm = (2 * (workers - 1) / workers * buffer_bytes / (bandwidth_gbit * 1e9 / 8)
            + 2 * (workers - 1) * LATENCY_S)
    return {"workers": workers, "comm_ms": 1000 * comm,
            "strong_speedup": step_s / (step_s / workers + comm),
            "weak_efficiency": step_s / (step_s + comm),
            "weak_speedup": workers * step_s / (step_s + comm)}


def table(rows: list[dict], paper: list[dict], note: str) -> str:
    lines = [note, "", "| model | inference | processes | examples/s | step ms | speed-up |",
             "|---|---|---:|---:|---:|---:|"]
    single = {(r["model"], r["inference"]): r["examples_per_second"] for r in rows
              if r["processes"] == 1}
    for r in rows:
        speedup = r["examples_per_second"] / single[r["model"], r["inference"]]
        lines.append(f"| {r['model']} | {r['inference']} | {r['processes']} | "
                     f"{r['examples_per_second']:,.0f} | {r['step_ms']:.1f} | {speedup:.2f} |")
    lines += ["", "| model | inference | parameters | MB a step | 1-process step ms | workers | "
              "all-reduce ms | speed-up, batch 100 | speed-up, 100 a worker |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in paper:
        lines.append(f"| {p['model']} | {p['inference']} | {p['parameters']:,} | "
                     f"{p['bytes'] / 1e6:.2f} | {p['step_ms']:.1f} | {p['workers']} | "
                     f"{p['comm_ms']:.1f} | {p['strong_speedup']:.2f} | "
                     f"{p['weak_speedup']:.1f} ({100 * p['weak_efficiency']:.0f}%) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps a run")
    parser.add_argument("--bandwidth", type=float, default=10.0, help="network, Gb/s")
    parser.add_argument("--note", default="2-core CPU shared with other jobs (measured under "
                        "load), torch 2.13, one thread a process",
                        help="what the machine was doing, for the table")
    parser.add_argument("--step-ms", type=float, nargs="*", default=[],
                        help="also predict for these single-process step times (ms), e.g. a "
                        "GPU's or a quiet machine's")
    parser.add_argument("--out", help="where to write distributed.json and distributed.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, inference in PAIRS:
            for processes in (1, 2):
                rows.append(measure(model, inference, processes, args.steps,
                                    Path(tmp) / f"{inference}-{processes}"))
                print(json.dumps(rows[-1]), flush=True)
    paper = []
    for model, inference in PAIRS:
        parameters, buffer_bytes = exchanged_bytes(model, inference)
        measured = next(r["step_ms"] for r in rows if (r["model"], r["inference"],
                                                       r["processes"]) == (model, inference, 1))
        for step_ms in (measured, *args.step_ms):
            for workers in WORKERS:
                paper.append({"model": model, "inference": inference, "parameters": parameters,
                              "bytes": buffer_bytes, "step_ms": step_ms,
                              **predict(step_ms / 1000, buffer_bytes, workers, args.bandwidth)})
    text = table(rows, paper, f"{args.note}; {args.steps} steps a run, "
                 f"{args.bandwidth:g} Gb/s and {LATENCY_S * 1e6:.0f} us a message on paper.")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "distributed.json", {"note": args.note, "measured": rows,
                                              "on_paper": paper})
        write_text(out / "distributed.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
