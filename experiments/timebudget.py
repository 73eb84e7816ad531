"""Accuracy against training time at an equal budget per run, at K = 10 and K = 100.

    python -m experiments.timebudget --budget 1800 --seeds 0 1 --jobs 2

runs every method x seed on each data set (default: two-digit MNIST with 1,000 labels,
K = 100, and MNIST with 100 labels, K = 10) as ``ppl-ssvae train --time-limit BUDGET
--eval-every-seconds BUDGET/60 --eval-from-seconds 1`` (measured at 1, 2, 4 ... s, then
every BUDGET/60 s: the curves have points from the start on a log time axis), each into
``RESULTS/runs/DATASET/METHOD/seedS`` (``RESULTS`` is ``experiments/results/k100``).
Budgets count CPU seconds of training on one thread, evaluation excluded (``--clock
wall`` for the wall clock): two jobs share a 2-core machine with whatever else runs on
it, and the wall clock would charge each run for the others. A run whose summary says it
used the budget is not run again; any other goes on from its checkpoint (``--resume``),
so a larger ``--budget`` extends the runs. Then the aggregate:

- ``summary.json``: per data set and method, mean over seeds of the validation accuracy
  at 1/8, 1/4, 1/2 and all of the budget, the seconds to reach 90% and 100% of the exact
  sum's (``m2/enum``'s) final accuracy, the step time, and the targets' verdicts;
- ``figures/accuracy_vs_time.png``: validation accuracy against training seconds (log
  x), one curve per method, the mean over seeds with a band from the lowest to the
  highest seed, one panel per data set;
- ``results.md``: the table, which ``python -m experiments.readme`` copies into the
  README.

(The table and the figure are drawn by ``experiments.budget_report``, the verdicts
written by ``experiments.verdicts``.)

The accuracy "at" a time is the last measurement taken at or before it (what a run
stopped then would have had); the final one is the measurement where the run stopped.
Seconds to a target reached at a run's first measurement are a bound, shown as "≤".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from experiments import compare
from experiments.budget_report import accuracy_at, figure, table
from experiments.runs import train_command, worker_env
from experiments.verdicts import EXACT, targets
from ppl_ssvae.io import write_json, write_text

RESULTS = Path(__file__).parent / "results" / "k100"
# the original's rows; the estimators of issue 22 (experiments.verdicts judges them); the
# models with structure of issue 23 and the two-digit model's fair baseline (a model that
# needs 100 classes runs on two-digit MNIST only)
METHODS = ["m2/enum", "m2/gumbel-cat-kl", "m2/st-gumbel-cat-kl", "m2/tracegraph", "mlp/ml",
           "m2/sum-and-sample", "m2/rloo", "m2/unordered-set", "m2/gumbel-rao",
           "two-digit/gumbel-cat-kl", "two-digit/enum", "two-digit-mlp/ml", "hierarchical/enum",
           # the two models with structure at Kingma et al.'s alpha (classifier weight 0.1)
           "two-digit-gumbel-cat-kl-cw01", "hierarchical-enum-cw01"]
SEEDS = [0, 1]
ABSOLUTE = 0.95  # "s to 95%": validation accuracy, at K = 10
DATASETS = ["two-digit-mnist:1000", "mnist:100"]
CLASSES = {"mnist": 10, "two-digit-mnist": 100}  # for panels whose runs have no summary yet

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
EPOCHS = 100_000  # the budget ends every run, never the epoch count


def parse_dataset(text: str) -> tuple[str, int]:
    name, colon, labels = text.partition(":")
    if not (colon and name and labels.isdigit() and int(labels) > 0):
        raise argparse.ArgumentTypeError(f"name data sets as DATASET:LABELS, e.g. "
                                         f"two-digit-mnist:1000; got {text!r}")
    return name, int(labels)


def fits(model: str, dataset: str) -> bool:
    """Whether ``model`` runs on ``dataset`` (the two-digit models need its 100 classes)."""
    from ppl_ssvae.registry import MODELS

    classes = MODELS[model].classes
    return classes is None or classes == CLASSES.get(dataset, classes)


def run_dir(results: Path, dataset: str, key: str, seed: int) -> Path:
    return results / "runs" / dataset / key.replace("/", "-") / f"seed{seed}"


def seeds_on_disk(results: Path) -> set[int]:
    """The seeds of every run directory under ``results/runs`` (``seedN``)."""
    return {int(p.name[4:]) for p in results.glob("runs/*/*/seed*")
            if p.is_dir() and p.name[4:].isdigit()}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(directory: Path, budget: float) -> bool:
    """The run has used ``budget`` (or a larger one), or finished every epoch."""
    summary = read_json(directory / "summary.json")
    if not summary:
        return False
    if summary.get("stopped_by") == "time-limit":
        return (summary.get("time_limit") or 0) >= budget
    return summary.get("stopped_by") == "epochs"


def run_one(job, args: argparse.Namespace) -> tuple[str, int]:
    (dataset, labels), row, seed = job
    key, model, inference, config = row
    out = run_dir(args.results, dataset, key, seed)
    name = f"{dataset} {key} seed {seed}"
    if is_done(out, args.budget):
        print(f"[done already] {name}", flush=True)
        return name, 0
    out.mkdir(parents=True, exist_ok=True)
    settings = {**config, "model": model, "inference": inference, "dataset": dataset,
                "labels": labels, "seed": seed, "epochs": EPOCHS, "out": str(out),
                "time_limit": args.budget, "time_clock": args.clock,
                "eval_every_seconds": args.eval_every or args.budget / 60,
                "eval_from_seconds": args.eval_from, "device": args.device}
    if args.data_dir:
        settings["data_dir"] = args.data_dir
    started = time.time()
    with open(out / "train.log", "ab") as log:
        code = subprocess.call(train_command(settings, "--resume"), stdout=log,
                               stderr=subprocess.STDOUT, env=worker_env(args.jobs))
    status = "ok" if code == 0 else f"failed ({code}), see {out / 'train.log'}"
    print(f"[{status}] {name} in {time.time() - started:.0f} s", flush=True)
    return name, code


# --------------------------------------------------------------------------- aggregate

def load_runs(results: Path, dataset: str, key: str, seeds: list[int], clock: str
              ) -> list[dict]:
    """Each run's evaluations as (seconds, accuracy) arrays, with its summary if it has one."""
    runs = []
    for seed in seeds:
        directory = run_dir(results, dataset, key, seed)
        path = directory / "evaluations.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            runs.append({"seed": seed, "summary": read_json(directory / "summary.json"),
                         "seconds": np.array([r[f"{clock}_seconds"] for r in rows]),
                         "accuracy": np.array([r["valid_accuracy"] for r in rows])})
    return runs


def seconds_to(run: dict, target: float) -> float | None:
    reached = run["accuracy"] >= target
    return float(run["seconds"][reached][0]) if reached.any() else None


def reached_at_first(run: dict, target: float) -> bool:
    """Already there at the first measurement: the seconds to it are only a bound."""
    return bool(run["accuracy"][0] >= target)


def mean(values: list) -> float | None:
    """The mean over seeds, or None unless every seed has a value."""
    return statistics.fmean(values) if values and None not in values else None


def summarise(runs: list[dict], budget: float, exact_final: float | None) -> dict:
    finished = [r["summary"] for r in runs if r["summary"]]
    entry = {
        "seeds": [r["seed"] for r in runs],
        "complete": len(finished) == len(runs),
        "accuracy_at": {str(f): mean([accuracy_at(r, f * budget) for r in runs])
                        for f in FRACTIONS[:-1]},
        "final_accuracy": mean([float(r["accuracy"][-1]) for r in runs]),
        "final_accuracy_range": [min(float(r["accuracy"][-1]) for r in runs),
                                 max(float(r["accuracy"][-1]) for r in runs)],
        "step_seconds": mean([s["train_cpu_seconds"] / s["steps"] for s in finished
                              if s.get("steps")] or [None]),
        "epochs_trained": mean([s.get("epochs_trained") for s in finished] or [None]),
        "test_accuracy_last": mean([s.get("test_accuracy_last") for s in finished] or [None]),
        "test_accuracy": mean([s.get("test_accuracy") for s in finished] or [None]),
        "test_accuracy_sd": (statistics.stdev([s["test_accuracy"] for s in finished])
                             if len(finished) > 1 and all(s.get("test_accuracy") is not None
                                                          for s in finished) else None),
    }
    entry["accuracy_at"]["1.0"] = entry["final_accuracy"]
    absolute = [seconds_to(r, ABSOLUTE) for r in runs]
    entry["seconds_to_95_valid"] = mean(absolute)
    entry["reached_95_valid"] = sum(t is not None for t in absolute)
    for share in (0.9, 1.0):
        times = ([seconds_to(r, share * exact_final) for r in runs]
                 if exact_final is not None else [None])
        entry[f"seconds_to_{round(share * 100)}"] = mean(times)
        entry[f"reached_{round(share * 100)}"] = sum(t is not None for t in times)
        entry[f"seconds_to_{round(share * 100)}_is_bound"] = exact_final is not None and any(
            reached_at_first(r, share * exact_final) for r in runs)
    return entry


def aggregate(results: Path, datasets: list[tuple[str, int]], keys: list[str], seeds: list[int],
              budget: float, clock: str = "cpu", also: set[int] | frozenset = frozenset()
              ) -> dict:
    """The comparison over ``seeds`` (each row says which of them it holds), and the runs
    of the seeds in ``also`` where a row has them (a row measured on more seeds)."""
    summary = {"budget": budget, "clock": clock, "seeds": seeds, "panels": {}}
    drawn = {}
    loaded = sorted(set(seeds) | set(also))
    for dataset, labels in datasets:
        runs_by_method = {key: load_runs(results, dataset, key, loaded, clock) for key in keys}
        if not any(runs_by_method.values()):
            continue
        exact_runs = runs_by_method.get(EXACT) or []
        exact_final = mean([float(r["accuracy"][-1]) for r in exact_runs]) if exact_runs else None
        classes = next((r["summary"]["classes"] for runs in runs_by_method.values() for r in runs
                        if r["summary"] and "classes" in r["summary"]), CLASSES.get(dataset, "?"))
        panel = {"classes": classes, "labels": labels, "exact_final_accuracy": exact_final,
                 "methods": {key: summarise(runs, budget, exact_final)
                             for key, runs in runs_by_method.items() if runs}}
        panel["targets"] = targets(panel, budget)
        summary["panels"][dataset] = panel
        drawn[dataset] = (panel, runs_by_method)
    write_json(results / "summary.json", summary)
    write_text(results / "results.md", table(summary))
    if drawn:
        figure(drawn, budget, clock, results / "figures" / "accuracy_vs_time.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.timebudget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, required=True,
                        help="training seconds per run (CPU seconds unless --clock wall)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--eval-every", type=float, default=None,
                        help="seconds between validation measurements (default budget / 60)")
    parser.add_argument("--eval-from", type=float, default=1.0,
                        help="the first measurement's seconds; then at doubling times until "
                        "they are --eval-every apart (default 1)")
    parser.add_argument("--methods", nargs="+", type=compare.parse_model, default=None,
                        help=f"MODEL/INFERENCE rows or config names (default {' '.join(METHODS)})")
    parser.add_argument("--datasets", nargs="+", type=parse_dataset, default=None,
                        help=f"DATASET:LABELS (default {' '.join(DATASETS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only rebuild summary.json, results.md and the figure")
    args = parser.parse_args(argv)
    methods = args.methods or [compare.resolve(m) for m in METHODS]
    datasets = args.datasets or [parse_dataset(d) for d in DATASETS]
    if not args.budget > 0:
        print("timebudget: error: --budget must be positive", file=sys.stderr)
        return 2

    from ppl_ssvae.data import LOADERS
    from ppl_ssvae.registry import UnsupportedError, check

    try:
        for _, model, inference, _ in methods:
            check(model, inference)
    except UnsupportedError as e:
        print(f"timebudget: error: {e}", file=sys.stderr)
        return 2
    unknown = [d for d, _ in datasets if d not in LOADERS]
    if unknown:
        print(f"timebudget: error: unknown dataset {unknown[0]!r}: use one of "
              f"{', '.join(LOADERS)}", file=sys.stderr)
        return 2

    failed = []
    if not args.aggregate_only:
        jobs = [(d, row, s) for d in datasets for s in args.seeds for row in methods
                if fits(row[1], d[0])]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            failed = [name for name, code in pool.map(lambda job: run_one(job, args), jobs) if code]
    # the aggregate is the whole comparison, not this invocation's rows alone: every
    # default method and data set (those without runs are left out) beside the ones asked,
    # and every seed that has a run (a row run on more seeds says so in its last column)
    keys = list(dict.fromkeys([*METHODS, *(row[0] for row in methods)]))
    everywhere = list(dict.fromkeys([*(parse_dataset(d) for d in DATASETS), *datasets]))
    aggregate(args.results, everywhere, keys, sorted(set(SEEDS) | set(args.seeds)), args.budget,
              args.clock, also=seeds_on_disk(args.results))
    print(f"results in {args.results}/ (summary.json, results.md, figures/accuracy_vs_time.png)")
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
