"""Variance against cost of every inference method of M2, on the same weights.

    python -m experiments.estimators --draws 30

For each data set (MNIST with 100 labels, K = 10; two-digit MNIST with 1,000 labels,
K = 100) it trains one M2 (``--reference``, gumbel-cat-kl: cheap at any K) and keeps
its weights at two points, ``--early`` and ``--late`` steps. On each set of weights,
with every method's pair loaded with those same weights and one fixed batch (100
unlabelled and 100 labelled images, binarised once), it draws ``--draws`` gradients
of the method's training loss (``pair.loss_and_grads``, the CLI's step without the
optimiser) and records, per image:

- ``deviation``: the standard deviation of one draw's gradient, sqrt(sum of the
  coordinates' variances), on the classifier's parameters and on the decoder's;
- ``bias``: |mean of the draws - the exact sum's mean| over the exact mean's norm, with
  ``bias_noise`` the same norm expected from the two means' standard errors alone (a
  bias below it is not measured); the exact sum's own mean is from ``--draws`` draws;
- ``cpu_ms``: the median CPU time of one such call (one thread).

Methods that need a learned baseline network (tracegraph-nn) are left out: their
baseline would be untrained on borrowed weights. Each method first takes
``--warm-up`` calls (a running-average baseline needs them). Writes
``RESULTS/summary.json``, ``RESULTS/results.md`` and
``RESULTS/figures/variance_vs_cost.png`` (log-log, one point per method, K = 10 and
K = 100 side by side; hollow markers are the early weights).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from experiments import compare  # noqa: E402
from ppl_ssvae import data as data_lib  # noqa: E402
from ppl_ssvae.batch import Batch  # noqa: E402
from ppl_ssvae.config import Settings  # noqa: E402
from ppl_ssvae.io import save_figure, write_json, write_text  # noqa: E402
from ppl_ssvae.registry import MODELS, build  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "estimators"
DATASETS = ["mnist:100", "two-digit-mnist:1000"]
LEFT_OUT = ("tracegraph-nn",)  # a learned baseline network: untrained on borrowed weights
EXACT = "enum"


def settings_for(inference: str, dataset: str, labels: int) -> Settings:
    config = compare.config_for("m2", inference)
    return Settings(model="m2", inference=inference, dataset=dataset, labels=labels,
                    progress=False, figures=False, **config)


def reference_weights(dataset: str, labels: int, steps: list[int], reference: str, seed: int
                      ) -> tuple[data_lib.Dataset, torch.Tensor, dict[int, dict]]:
    """The data, its labelled indices and the reference pair's state after each of
    ``steps`` training steps (the training loop's own step)."""
    from ppl_ssvae.train import adam, draw_batch, seed_everything, take_step

    settings = settings_for(reference, dataset, labels)
    seed_everything(seed)
    data = data_lib.load(dataset, None, seed)
    labelled = data_lib.labelled_indices(data, labels, seed)
    pair = build(settings, data.num_classes, data.x_dim)
    optimizer = adam(pair.parameters(), settings.lr)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train), generator=g)
    per_epoch = math.ceil(len(data.train) / settings.batch_size)
    states = {}
    for step in range(max(steps) + 1):
        if step in steps:
            states[step] = copy.deepcopy(pair.state_dict())
        if step == max(steps):
            break
        if step % per_epoch == 0 and step:
            order = torch.randperm(len(data.train), generator=g)
        batch = draw_batch(data, labelled, settings, order, step % per_epoch, g)
        take_step(pair, optimizer, batch, step, settings)
    return data, labelled, states


def fixed_batch(data: data_lib.Dataset, labelled: torch.Tensor, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed + 1)
    idx_u = torch.randperm(len(data.train), generator=g)[:100]
    idx_l = labelled[torch.randint(len(labelled), (100,), generator=g)]
    x_u, x_l = data_lib.binarize(data.train.x[idx_u], g), data_lib.binarize(data.train.x[idx_l], g)
    return Batch(x_u=x_u, x_l=x_l, y_l=data.train.y[idx_l], n_u=len(data.train),
                 n_l=len(labelled), idx_u=idx_u, idx_l=idx_l)


def draws(pair, batch: Batch, count: int, warm_up: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    """``count`` per-image gradients of the classifier's and the decoder's parameters
    (each (count, P)), and the CPU seconds of each call."""
    groups = {"classifier": list(pair.guide.classifier.parameters()),
              "decoder": list(pair.model.decoder.parameters())}
    grads: dict[str, list] = {name: [] for name in groups}
    seconds = []
    for i in range(warm_up + count):
        pair.zero_grad(set_to_none=True)
        started = time.process_time()
        pair.loss_and_grads(batch, step=10**6)
        elapsed = time.process_time() - started
        if i < warm_up:
            continue
        seconds.append(elapsed)
        for name, params in groups.items():
            grads[name].append(torch.cat([p.grad.flatten() / batch.size for p in params]))
    return {name: torch.stack(g) for name, g in grads.items()}, seconds


def measure(inference: str, dataset: str, labels: int, state: dict, batch: Batch, k: int,
            x_dim: int, count: int, warm_up: int, seed: int) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    pair = build(settings_for(inference, dataset, labels), k, x_dim)
    pair.load_state_dict(state)
    pair.train()
    grads, seconds = draws(pair, batch, count, warm_up)
    return {"grads": grads, "cpu_ms": 1000 * statistics.median(seconds)}


def summarise(measured: dict[str, dict]) -> dict[str, dict]:
    exact = measured[EXACT]["grads"]
    rows = {}
    for inference, m in measured.items():
        row = {"cpu_ms": m["cpu_ms"]}
        for group, g in m["grads"].items():
            e = exact[group]
            row[f"deviation_{group}"] = float(g.var(0).sum().sqrt())
            exact_norm = float(e.mean(0).norm())
            row[f"bias_{group}"] = float((g.mean(0) - e.mean(0)).norm()) / exact_norm
            noise = (g.var(0) / len(g) + e.var(0) / len(e)).sum().sqrt()
            row[f"bias_noise_{group}"] = float(noise) / exact_norm
        rows[inference] = row
    return rows


def table(summary: dict) -> str:
    lines = []
    for panel, points in summary.items():
        lines += [f"**{panel}**", "",
                  "| method | CPU ms | deviation, classifier (early / late) | deviation, decoder "
                  "(early / late) | bias, classifier (early / late; noise) |",
                  "|---|---:|---:|---:|---:|"]
        early, late = points["early"], points["late"]
        for method in late:
            e, la = early[method], late[method]
            lines.append(
                f"| {method} | {la['cpu_ms']:.0f} | {e['deviation_classifier']:.3g} / "
                f"{la['deviation_classifier']:.3g} | {e['deviation_decoder']:.3g} / "
                f"{la['deviation_decoder']:.3g} | {e['bias_classifier']:.2f} / "
                f"{la['bias_classifier']:.2f} ({la['bias_noise_classifier']:.2f}) |")
        lines.append("")
    return "\n".join(lines)


NEW = ("sum-and-sample", "rloo", "unordered-set", "gumbel-rao")


def figure(summary: dict, path: Path) -> None:
    """Log-log, variance of the classifier's gradient against CPU ms, one point per method
    and set of weights, the late points named; the new estimators as diamonds."""
    fig, axes = plt.subplots(1, len(summary), figsize=(7.5 * len(summary), 5.5), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for ax, (panel, points) in zip(axes[0], summary.items(), strict=True):
        for i, method in enumerate(points["late"]):
            color, marker = colors[i % len(colors)], "D" if method in NEW else "o"
            for when, face in (("early", "none"), ("late", color)):
                row = points[when][method]
                ax.scatter(row["cpu_ms"], row["deviation_classifier"] ** 2, color=color,
                           facecolors=face, marker=marker, s=40,
                           label=method if when == "late" else None)
            late = points["late"][method]
            ax.annotate(method, (late["cpu_ms"], late["deviation_classifier"] ** 2), fontsize=6,
                        xytext=(4, 2), textcoords="offset points", color=color)
        ax.set(xscale="log", yscale="log", xlabel="CPU ms per step (one thread)",
               ylabel="variance of one draw's gradient, classifier (per image)", title=panel)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=8, fontsize=7, frameon=False)
    fig.suptitle("Gradient variance against step cost, on the same weights (filled: late in "
                 "training; hollow: early; diamonds: the new estimators)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.estimators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--warm-up", type=int, default=5)
    parser.add_argument("--early", type=int, default=100, help="steps of the early weights")
    parser.add_argument("--late", type=int, default=2000, help="steps of the late weights")
    parser.add_argument("--reference", default="gumbel-cat-kl")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--methods", nargs="+", default=None,
                        help="measure these rows again (and the exact sum they are judged "
                             "against), keeping the other rows of RESULTS/summary.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--figure-only", action="store_true",
                        help="draw the figure again from RESULTS/summary.json")
    args = parser.parse_args(argv)
    if args.figure_only:
        summary = json.loads((args.results / "summary.json").read_text())
        figure(summary, args.results / "figures" / "variance_vs_cost.png")
        return 0
    torch.set_num_threads(1)
    methods = args.methods or [m for m in MODELS["m2"].inferences if m not in LEFT_OUT]
    if EXACT not in methods:
        methods = [EXACT, *methods]
    (args.results / "figures").mkdir(parents=True, exist_ok=True)
    summary = {}
    if args.methods and (args.results / "summary.json").exists():
        summary = json.loads((args.results / "summary.json").read_text())
    for text in args.datasets:
        dataset, labels = text.split(":")[0], int(text.split(":")[1])
        data, labelled, states = reference_weights(dataset, labels, [args.early, args.late],
                                                   args.reference, args.seed)
        batch = fixed_batch(data, labelled, args.seed)
        panel = f"{dataset}, K = {data.num_classes}"
        summary.setdefault(panel, {})
        for when, step in (("early", args.early), ("late", args.late)):
            measured = {}
            for method in methods:
                measured[method] = measure(method, dataset, labels, states[step], batch,
                                           data.num_classes, data.x_dim, args.draws,
                                           args.warm_up, args.seed)
                print(f"{panel} {when} {method}: {measured[method]['cpu_ms']:.0f} ms", flush=True)
            summary[panel][when] = {**summary[panel].get(when, {}), **summarise(measured)}
        write_json(args.results / "summary.json", summary)  # as far as it went
    header = (f"Reference weights: M2 trained with {args.reference} for {args.early} (early) "
              f"and {args.late} (late) steps, seed {args.seed}; {args.draws} draws per method "
              "on one fixed batch of 100 + 100 images; per image. CPU ms: the median of "
              "the draws, on one thread, with whatever else ran on the machine (say so when "
              "quoting them).\n\n")
    write_text(args.results / "results.md", header + table(summary))
    figure(summary, args.results / "figures" / "variance_vs_cost.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
