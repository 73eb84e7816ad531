"""Run every model x seed of a comparison, in parallel, resumably, and aggregate.

    python -m experiments.compare --models m2/enum m2/gumbel --seeds 0 1 2 \
        --labels 100 --epochs 50 --jobs 2
    python -m experiments.compare --dataset fashion-mnist --models m2/enum mlp/ml \
        --seeds 0 1 2 --epochs 30 --jobs 3        # into experiments/results/fashion

Each run is ``ppl-ssvae train`` with the model's config from
``experiments/configs/MODEL-INFERENCE.json`` (the settings that reached its best
accuracy here), writing into ``RESULTS/runs/MODEL-INFERENCE/seedS``. A run whose
``summary.json`` records the requested epochs is not run again; an interrupted
one resumes from its checkpoint (``--resume``). With ``--stop-at-original``, each
row the original published (``aggregate.ORIGINAL``) stops at the end of the first
epoch whose validation accuracy reaches the original's number (``--stop-at-accuracy``),
and such a run counts as finished. The aggregate goes to
``RESULTS/summary.json``, ``RESULTS/results.md`` and ``RESULTS/figures/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.aggregate import ORIGINAL, aggregate
from experiments.runs import train_command, worker_env

CONFIGS = Path(__file__).parent / "configs"
RESULTS = Path(__file__).parent / "results"



def results_dir(dataset: str | None) -> Path:
    """experiments/results for MNIST; experiments/results/fashion for Fashion-MNIST;
    experiments/results/NAME for another data set (a .npz file's stem)."""
    if dataset in (None, "mnist"):
        return RESULTS
    return RESULTS / ("fashion" if dataset == "fashion-mnist" else Path(dataset).stem)


def config_for(model: str, inference: str) -> dict:
    """The settings of ``configs/MODEL-INFERENCE.json``, or none."""
    path = CONFIGS / f"{model}-{inference}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def resolve(name: str) -> tuple[str, str, str, dict]:
    """A row of a comparison: ``MODEL/INFERENCE`` with the settings of
    ``configs/MODEL-INFERENCE.json``, or the name of a config file (``m2-gumbel-cat-kl-s3``)
    that holds ``model`` and ``inference`` itself. Returns (key, model, inference, settings);
    the key names the row in the tables and, with / as -, its runs' directory."""
    if "/" in name:
        model, _, inference = name.partition("/")
        return name, model, inference, config_for(model, inference)
    path = CONFIGS / f"{name}.json"
    if not path.exists():
        raise argparse.ArgumentTypeError(
            f"name rows as MODEL/INFERENCE (e.g. m2/enum) or as a config in {CONFIGS} "
            f"(e.g. m2-gumbel-cat-kl-s3); got {name!r}")
    settings = json.loads(path.read_text())
    if "model" not in settings or "inference" not in settings:
        raise argparse.ArgumentTypeError(f"{path} must name its model and inference")
    settings = dict(settings)
    return name, settings.pop("model"), settings.pop("inference"), settings


def run_dir(results: Path, key: str, seed: int) -> Path:
    return results / "runs" / key.replace("/", "-") / f"seed{seed}"


def is_done(directory: Path, epochs: int, target: float | None = None) -> bool:
    """Finished: its summary records the requested epochs, or (with a ``target``) that it
    stopped on reaching that validation accuracy."""
    summary = directory / "summary.json"
    if not summary.exists():
        return False
    try:
        summary = json.loads(summary.read_text())
    except json.JSONDecodeError:
        return False
    reached = (target is not None and summary.get("stopped_by") == "accuracy"
               and summary.get("stop_at_accuracy") == target)
    return summary.get("epochs") == epochs or reached


def stop_target(row: tuple[str, str, str, dict], args: argparse.Namespace) -> float | None:
    """The accuracy a row stops at: the original's number, with --stop-at-original."""
    if not args.stop_at_original or (args.dataset or row[3].get("dataset", "mnist")) != "mnist":
        return None  # the original's numbers are MNIST's
    known = ORIGINAL.get(row[0])
    return known[1] if known else None


def command(row: tuple[str, str, str, dict], seed: int, args: argparse.Namespace, out: Path
            ) -> list[str]:
    _, model, inference, config = row
    settings = {**config, "model": model, "inference": inference,
                "seed": seed, "labels": args.labels, "epochs": args.epochs, "out": str(out),
                "device": args.device}
    target = stop_target(row, args)
    if target is not None:
        settings["stop_at_accuracy"] = target
    if args.data_dir:
        settings["data_dir"] = args.data_dir
    if args.dataset:
        settings["dataset"] = args.dataset
    return train_command(settings, "--resume")


def run_one(job: tuple[tuple[str, str, str, dict], int], args: argparse.Namespace
            ) -> tuple[str, int, float]:
    row, seed = job
    out = run_dir(args.results, row[0], seed)
    name = f"{row[0]} seed {seed}"
    if is_done(out, args.epochs, stop_target(row, args)):
        print(f"[done already] {name}", flush=True)
        return name, 0, 0.0
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(out / "train.log", "ab") as log:
        code = subprocess.call(command(row, seed, args, out), stdout=log,
                               stderr=subprocess.STDOUT, env=worker_env(args.jobs))
    seconds = time.time() - started
    print(f"[{'ok' if code == 0 else f'failed ({code}), see ' + str(out / 'train.log')}] "
          f"{name} in {seconds:.0f} s", flush=True)
    return name, code, seconds


def parse_model(text: str) -> tuple[str, str, str, dict]:
    model, slash, inference = text.partition("/")
    if slash and not (model and inference):
        raise argparse.ArgumentTypeError(f"name models as MODEL/INFERENCE, e.g. m2/enum; got {text!r}")
    return resolve(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=parse_model, required=True,
                        help="rows: MODEL/INFERENCE pairs (e.g. m2/enum mlp/ml) or names of "
                        "configs in experiments/configs that give model and inference "
                        "(e.g. m2-gumbel-cat-kl-s3)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default=None,
                        help="the data set of every run (default: the configs', MNIST); "
                        "results then go to experiments/results/DATASET (fashion for "
                        "fashion-mnist) unless --results says otherwise")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--stop-at-original", action="store_true",
                        help="stop each run of a row the original published once its validation "
                        "accuracy reaches the original's number (MNIST only)")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only rebuild the tables and figures from finished runs")
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = results_dir(args.dataset)

    from ppl_ssvae.registry import UnsupportedError, check

    try:
        for _, model, inference, _ in args.models:
            check(model, inference)
    except UnsupportedError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2

    failed = []
    if not args.aggregate_only:
        jobs = [(row, s) for s in args.seeds for row in args.models]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for name, code, _ in pool.map(lambda job: run_one(job, args), jobs):
                if code != 0:
                    failed.append(name)
    aggregate(args.results, [row[0] for row in args.models], args.seeds, args.dataset or "mnist")
    print(f"results in {args.results}/ (summary.json, results.md, figures/)")
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
