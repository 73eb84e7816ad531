"""The time-budget comparison's report (``experiments.timebudget``): its table
(``results.md``, which ``python -m experiments.readme`` copies into the docs) and its
figure (validation accuracy against training seconds, one panel per data set)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.verdicts import EXACT  # noqa: E402
from ppl_ssvae.io import save_figure  # noqa: E402


def accuracy_at(run: dict, t: float) -> float | None:
    """The last measurement at or before ``t`` seconds; None before the first, or past
    the last of a run that has not finished (it has not got there yet)."""
    taken = run["seconds"] <= t
    if not taken.any() or (run["summary"] is None and t > run["seconds"][-1]):
        return None
    return float(run["accuracy"][taken][-1])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _seconds(entry: dict, share: int, runs: int) -> str:
    value = entry[f"seconds_to_{share}"]
    if value is not None:
        return f"{'≤ ' if entry.get(f'seconds_to_{share}_is_bound') else ''}{value:,.0f}"
    return f"not reached ({entry[f'reached_{share}']}/{runs})"


def _absolute(entry: dict, runs: int) -> str:
    """Seconds to 95% validation accuracy (the mean over seeds, if every seed got there)."""
    value = entry.get("seconds_to_95_valid")
    if value is not None:
        return f"{value:,.0f}"
    return f"not reached ({entry.get('reached_95_valid', 0)}/{runs})"


def _seeds(present: list[int], asked: list[int]) -> str:
    """The seeds a row's means are over (a row may hold more than were asked for), with
    how many of those asked it has if some are missing."""
    listed = ", ".join(str(s) for s in present)
    have = len(set(present) & set(asked))
    return listed if have == len(asked) else f"{listed} ({have} of {len(asked)})"


def table(summary: dict) -> str:
    head = ("| K | method | valid. % at 1/8 | 1/4 | 1/2 | all of the budget | s to 90% of exact | "
            "s to 100% of exact | s to 95% | step ms | epochs | seeds |")
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for panel in summary["panels"].values():
        for key, m in panel["methods"].items():
            at, n = m["accuracy_at"], len(m["seeds"])
            step = "–" if m["step_seconds"] is None else f"{1000 * m['step_seconds']:,.1f}"
            epochs = "–" if m["epochs_trained"] is None else f"{m['epochs_trained']:.1f}"
            lines.append(f"| {panel['classes']} | {key}{'' if m['complete'] else ' (running)'} | "
                         f"{_pct(at['0.125'])} | {_pct(at['0.25'])} | {_pct(at['0.5'])} | "
                         f"{_pct(at['1.0'])} | {_seconds(m, 90, n)} | {_seconds(m, 100, n)} | "
                         f"{_absolute(m, n)} | {step} | {epochs} | "
                         f"{_seeds(m['seeds'], summary['seeds'])} |")
    data = "; ".join(f"{name}, {p['classes']} classes, {p['labels']} labels"
                     for name, p in summary["panels"].items())
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines += ["", f"Budget: {summary['budget']:,.0f} s of training per run ({summary['clock']} "
              f"time, one thread, evaluation excluded). Validation accuracy, mean over the seeds "
              f"of each row (of {seeds}); exact = m2/enum's final accuracy; s to 95%: to 95% "
              f"validation accuracy; \"≤ s\": already "
              f"reached at a run's first measurement; step ms: CPU milliseconds per training "
              f"step. Data: {data}."]
    verdicts = [line for panel in summary["panels"].values() for line in panel["targets"]]
    if verdicts:
        lines += [""] + [f"- {line}" for line in verdicts]
    return "\n".join(lines) + "\n"


def figure(panels: dict[str, tuple[dict, dict[str, list[dict]]]], budget: float, clock: str,
           path: Path) -> None:
    """One panel per data set, fewest classes first: each method's mean curve over seeds,
    a min-max band."""
    panels = dict(sorted(panels.items(), key=lambda item: str(item[1][0]["classes"]).zfill(9)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False,
                             sharey=False)
    for ax, (dataset, (panel, runs_by_method)) in zip(axes[0], panels.items(), strict=True):
        for i, (key, runs) in enumerate(runs_by_method.items()):
            if not runs:
                continue
            start = min(float(r["seconds"][0]) for r in runs)
            end = max(float(r["seconds"][-1]) for r in runs)
            grid = np.geomspace(max(start, 1e-3), max(end, start * 1.0001, 1e-3), 200)
            curves = np.array([[np.nan if (a := accuracy_at(r, t)) is None else a for t in grid]
                               for r in runs])
            shared = ~np.isnan(curves).any(axis=0)  # where every seed has a measurement
            color = f"C{i}"
            ax.plot(grid[shared], 100 * curves[:, shared].mean(axis=0), color=color, label=key,
                    drawstyle="steps-post")
            ax.fill_between(grid[shared], 100 * curves[:, shared].min(axis=0),
                            100 * curves[:, shared].max(axis=0), color=color, alpha=0.2,
                            step="post", linewidth=0)
        exact = panel["methods"].get(EXACT, {}).get("final_accuracy")
        if exact is not None:
            ax.axhline(100 * exact, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set(xlabel=f"training seconds ({clock}, one thread)", ylabel="validation accuracy (%)",
               title=f"{dataset}: K = {panel['classes']}, {panel['labels']} labels")
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=8)
    separator = "; " if len(panels) > 1 else "\n"  # one panel is too narrow for one line
    fig.suptitle(f"Accuracy against training time, {budget:,.0f} s per run{separator}dashed: "
                 f"the exact sum's final accuracy", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=150)
    plt.close(fig)
