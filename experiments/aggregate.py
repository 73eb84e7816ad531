"""Aggregate finished runs into ``summary.json``, ``results.md`` and figures.

Test accuracy is always the one measured at the epoch of best *validation*
accuracy (``test_accuracy`` in each run's summary), never the best test epoch.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ppl_ssvae.io import save_figure, write_json, write_text  # noqa: E402

# Validation accuracy of the original Theano system (mean of 10 seeds, 300 epochs,
# best validation epoch), by its model names mapped onto ours.
ORIGINAL = {
    "m2/enum": ("ExactM2", 0.942),
    "m2/gumbel": ("GumbelSoftmaxM2 (s = 3)", 0.941),
    "m2/gumbel-cat-kl": ("GumbelSoftmaxM2 (s = 3)", 0.941),  # the original's own objective
    "m2/st-gumbel-cat-kl": ("STGumbelSoftmaxM2", 0.890),
    "m2/logistic-normal": ("LogisticNormalM2 (s = 1)", 0.897),
    "logistic-normal-prior/reparam": ("LogisticNormal", 0.923),
    "m2/st-gumbel": ("STGumbelSoftmaxM2", 0.890),
    "m2/score": ("ApproxM2", 0.875),
    "m2/tracegraph": ("ApproxM2", 0.875),  # ApproxM2 plus a baseline: this library's improvement
    # rows of the reproduction, named by their config (experiments/configs/NAME.json)
    "m2-gumbel-cat-kl-s3": ("GumbelSoftmaxM2 (s = 3)", 0.941),
    "m2-st-gumbel-cat-kl-s1": ("STGumbelSoftmaxM2", 0.890),
    "m2-logistic-normal-cat-kl-s1": ("LogisticNormalM2 (s = 1)", 0.897),
    "m2-logistic-normal-cat-kl-s3": ("LogisticNormalM2 (s = 3)", 0.939),
    "logistic-normal-prior-s3": ("LogisticNormal", 0.923),  # the prior's scale 3: see README
    # and the original's labelled images, generated from their one-hot label
    "logistic-normal-prior-s3-onehot": ("LogisticNormal", 0.923),
    # and the original's weight on the labelled set's ELBO (--labelled-weight 500)
    "logistic-normal-prior-s3-onehot-lw500": ("LogisticNormal", 0.923),
    "m2-score-lw500": ("ApproxM2", 0.875),
    # ApproxM2 with the original's gradient-norm clipping (per image; the value in the name)
    "m2-score-clip50": ("ApproxM2", 0.875),
    "m2-score-clip300": ("ApproxM2", 0.875),
    "dirichlet/reparam": ("LogGamma", 0.874),
    "mlp/ml": ("MLP", 0.771),
}
PUBLISHED = [
    ("Kingma et al. 2014, M2 (test)", 0.880),
    ("Pyro SS-VAE tutorial, enum + classifier loss (test)", 0.932),
    ("Maaloe et al. 2016, ADGM (test)", 0.9904),
]


def _load_runs(results: Path, key: str, seeds: list[int], finished: bool = True
               ) -> list[tuple[dict, list[dict], Path]]:
    """(summary, metrics rows, directory) of the runs of ``key``: the finished ones, or
    with ``finished=False`` those stopped before they wrote a summary."""
    runs = []
    for seed in seeds:
        directory = results / "runs" / key.replace("/", "-") / f"seed{seed}"
        summary, metrics = directory / "summary.json", directory / "metrics.jsonl"
        if metrics.exists() and summary.exists() == finished:
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            if rows:
                runs.append((json.loads(summary.read_text()) if finished else {"seed": seed},
                             rows, directory))
    return runs


def _partial(results: Path, key: str, seeds: list[int]) -> dict | None:
    """Runs stopped before their last epoch: validation accuracy only, never a test
    number, since the epoch a finished run would select is unknown."""
    runs = _load_runs(results, key, seeds, finished=False)
    if not runs:
        return None
    best = [max(r["valid_accuracy"] for r in rows) for _, rows, _ in runs]
    mean, std = _mean_std(best)
    return {"partial": True, "best_valid_accuracy_mean": mean, "best_valid_accuracy_std": std,
            "seeds": [s["seed"] for s, _, _ in runs],
            "epochs_reached": [len(rows) for _, rows, _ in runs],
            "seconds_per_epoch": statistics.fmean(r["seconds"] for _, rows, _ in runs for r in rows),
            "device": json.loads((runs[0][2] / "config.json").read_text()).get("device", "cpu")}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(results: Path, keys: list[str], seeds: list[int], dataset: str = "mnist") -> dict:
    """``dataset`` names the data in the tables and figure; the original's and the
    published numbers are shown for MNIST only."""
    results = Path(results)
    known = ORIGINAL if dataset == "mnist" else {}
    figures = results / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    previous = results / "summary.json"
    summary = json.loads(previous.read_text()) if previous.exists() else {}
    curves = {}
    for key in keys:
        runs = _load_runs(results, key, seeds)
        if not runs:
            partial = _partial(results, key, seeds)
            if partial:
                summary[key] = partial
                curves[key] = [[r["valid_accuracy"] for r in rows]
                               for _, rows, _ in _load_runs(results, key, seeds, finished=False)]
            continue
        sums = [s for s, _, _ in runs]
        test_mean, test_std = _mean_std([s.get("test_accuracy") for s in sums])
        valid_mean, valid_std = _mean_std([s.get("best_valid_accuracy") for s in sums])
        elbo_mean, _ = _mean_std([s.get("test_elbo") for s in sums])
        summary[key] = {
            "test_accuracy_mean": test_mean,
            "test_accuracy_std": test_std,
            "best_valid_accuracy_mean": valid_mean,
            "best_valid_accuracy_std": valid_std,
            "test_elbo_mean": elbo_mean,
            "seeds": [s.get("seed") for s in sums],
            "epochs": min(s.get("epochs", 0) for s in sums),
            "epochs_per_seed": [s.get("epochs", 0) for s in sums],
            "stopped_by": [s.get("stopped_by", "epochs") for s in sums],
            "labels": sums[0].get("labels"),
            "wall_seconds": sum(sum(r["seconds"] for r in rows) for _, rows, _ in runs),
            "seconds_per_epoch": _mean_std([s.get("seconds_per_epoch") for s in sums])[0],
            "device": sums[0].get("device", "cpu"),
        }
        if key in known:
            summary[key]["original"] = {"row": known[key][0], "valid_accuracy": known[key][1]}
            summary[key]["epochs_to_original"] = epochs_to_reach(
                [[r["valid_accuracy"] for r in rows] for _, rows, _ in runs], known[key][1])
        curves[key] = [[r["valid_accuracy"] for r in rows] for _, rows, _ in runs]
        slug = key.replace("/", "-")
        for name in ("samples", "kl_per_dim"):
            source = runs[0][2] / f"{name}.png"
            if source.exists():
                shutil.copyfile(source, figures / f"{name}_{slug}.png")
    write_json(results / "summary.json", summary)
    write_text(results / "results.md", markdown(summary, dataset))
    if curves:
        accuracy_figure(curves, figures / "valid_accuracy.png", dataset)
    return summary


def epochs_to_reach(curves: list[list[float]], target: float) -> int | None:
    """The first epoch at which the mean over seeds of the best validation accuracy so far
    reaches ``target``; None if it never does. A run that ended before the others keeps
    its best (a run stopped on reaching the target stays at or above it)."""
    length = max(len(c) for c in curves)
    best = np.array([np.maximum.accumulate(c + [max(c)] * (length - len(c))) for c in curves])
    best = best.mean(0)
    reached = np.nonzero(best >= target)[0]
    return int(reached[0]) + 1 if len(reached) else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _spread(row: dict, name: str) -> str:
    """"93.80 ± 0.13": mean ± std over seeds; one seed has no spread to report."""
    if len(row["seeds"]) < 2:
        return f"{_pct(row[name + '_mean'])} (1 seed)"
    return f"{_pct(row[name + '_mean'])} ± {_pct(row[name + '_std'])}"


def _reached(row: dict) -> str:
    epochs = row.get("epochs_to_original")
    if epochs is None:
        return f"not in {max(row.get('epochs_per_seed') or [row['epochs']])}"
    return str(epochs)


def _epochs(row: dict) -> str:
    """"30", or "12-30" where runs stopped on reaching the original's number."""
    per_seed = row.get("epochs_per_seed") or [row["epochs"]]
    low, high = min(per_seed), max(per_seed)
    return str(high) if low == high else f"{low}-{high}"


def markdown(summary: dict, dataset: str = "mnist") -> str:
    known = ORIGINAL if dataset == "mnist" else {}
    lines = [
        "| model / inference | test accuracy % (mean ± std) | best valid. % | test ELBO (nats/image) "
        "| seeds | epochs | wall time | original (valid., 300 epochs) | epochs to the original's "
        "number | time per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    finished = [k for k in summary if not summary[k].get("partial")]
    order = sorted(finished, key=lambda k: -(summary[k]["test_accuracy_mean"] or 0))
    for key in order:
        row = summary[key]
        original = known.get(key)
        elbo = row.get("test_elbo_mean")
        hours = row["wall_seconds"] / 3600
        lines.append(
            f"| {key} | {_spread(row, 'test_accuracy')} "
            f"| {_pct(row['best_valid_accuracy_mean'])} | {'n/a' if elbo is None else f'{elbo:.1f}'} "
            f"| {len(row['seeds'])} | {_epochs(row)} | {hours:.2f} h ({row.get('device', 'cpu')}) "
            f"| {f'{original[0]}: {100 * original[1]:.1f}' if original else ''} "
            f"| {_reached(row) if original else ''} "
            f"| {row['wall_seconds'] / 3600 / max(1, len(row['seeds'])):.2f} h |")
    if any("accuracy" in summary[k].get("stopped_by", []) for k in finished):
        lines += ["", "epochs: a range where a row's runs stopped at the end of the first epoch "
                  "that reached the original's number (`--stop-at-original`); wall time: the "
                  "sum over its runs."]
    partial = sorted((k for k in summary if summary[k].get("partial")),
                     key=lambda k: -summary[k]["best_valid_accuracy_mean"])
    if partial:
        lines += ["", "Runs not finished (running, or stopped before their last epoch; validation "
                  "only: no test accuracy is reported for a run that did not finish):", "",
                  "| model / inference | best valid. % (mean ± std) | epochs reached | seeds "
                  "| s/epoch | original (valid., 300 epochs) |", "|---|---|---|---|---|---|"]
        for key in partial:
            row = summary[key]
            original = known.get(key)
            lines.append(
                f"| {key} | {_spread(row, 'best_valid_accuracy')} "
                f"| {', '.join(map(str, row['epochs_reached']))} "
                f"| {len(row['seeds'])} | {row['seconds_per_epoch']:.0f} ({row['device']}) "
                f"| {f'{original[0]}: {100 * original[1]:.1f}' if original else ''} |")
    lines.append("")
    if dataset == "mnist":
        lines.append("Published references (MNIST, 100 labels): " + "; ".join(
            f"{name}: {100 * value:.1f}%" for name, value in PUBLISHED) + ".")
    else:
        lines.append(f"Data set: {dataset}.")
    return "\n".join(lines) + "\n"


def accuracy_figure(curves: dict[str, list[list[float]]], path: Path, dataset: str = "mnist"
                    ) -> None:
    """Validation accuracy per epoch, mean and a band of one std over seeds (dashed where
    some seeds had stopped); the legend lists the models in the order of their final
    accuracy, top to bottom."""
    stats, common = {}, {}
    for key, runs in curves.items():
        # at each epoch, the runs that reached it: a run stopped on reaching the original's
        # number (--stop-at-original) ends early, and the curve goes on, dashed, with the others
        length = max(len(r) for r in runs)
        present = [np.array([100 * r[e] for r in runs if len(r) > e]) for e in range(length)]
        stats[key] = (np.array([v.mean() for v in present]), np.array([v.std() for v in present]),
                      len(runs))
        common[key] = min(len(r) for r in runs)
    order = sorted(stats, key=lambda k: -stats[k][0][-1])
    colours = plt.get_cmap("tab10" if len(order) <= 10 else "tab20").colors
    many = len(order) > 4
    fig, ax = plt.subplots(figsize=(9.5 if many else 7.5, 4.5))
    for i, key in enumerate(order):
        mean, std, seeds = stats[key]
        epochs = np.arange(1, len(mean) + 1)
        colour = colours[i % len(colours)]
        original = ORIGINAL.get(key) if dataset == "mnist" else None
        label = f"{key} ({seeds} seed{'s' if seeds != 1 else ''})" + (
            f"; original {100 * original[1]:.1f}" if original else "")
        every = common[key]  # epochs every seed reached
        ax.plot(epochs[:every], mean[:every], color=colour,
                marker="o" if len(mean) <= 10 else None, markersize=3, label=label)
        if every < len(mean):
            ax.plot(epochs[every - 1:], mean[every - 1:], color=colour, ls="--", lw=1)
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
        if original:  # the original's number (300 epochs), a tick at the right edge
            ax.plot([1.0], [100 * original[1]], marker="<", color=colour, markersize=8,
                    transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
           title=f"{'MNIST, 100 labels' if dataset == 'mnist' else dataset}: validation "
                 f"accuracy (mean ± std over seeds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low = min(float((mean - std).min()) for mean, std, _ in stats.values())
    ax.set_ylim(max(0.0, low - 2), 100)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)
