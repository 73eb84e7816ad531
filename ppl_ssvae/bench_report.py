"""The report of ``ppl-ssvae bench`` (``ppl_ssvae.bench`` measures): its rows as Markdown
tables, the targets of the benchmark issue met or not, the figure of step time
against K, and the files ``--out`` asks for."""

from __future__ import annotations

import os
from pathlib import Path

PLAIN = "plain-torch-m2"  # the model of the plain-PyTorch M2 step's rows
SCALING_INFERENCES = ("enum", "gumbel", "st-gumbel", "score")  # the scaling table's columns
# the hierarchical model's exact sum beside M2's relaxed step, at every K of the scaling
# table (M2's exact sum is in that table)
HIERARCHICAL = (("m2", "gumbel-cat-kl"), ("hierarchical", "enum"),
                ("hierarchical", "gumbel-cat-kl"))


def targets(rows: list[dict]) -> list[tuple[str, float | None, float | None, str, bool | None]]:
    """The targets of the benchmark issue: (what, measured on step time, measured on CPU
    time, goal, met or None if not measured); a target is judged on step time."""
    def find(section, model, inference, k=10):
        return next((r for r in rows if r["section"] == section and r["model"] == model
                     and r["inference"] == inference and r["classes"] == k), {})

    def ratios(a, b):
        return tuple(a[key] / b[key] if a.get(key) and b.get(key) else None
                     for key in ("step_ms", "cpu_ms"))

    checks = [("exact M2 step / plain-PyTorch step",
               ratios(find("step", "m2", "enum"), find("step", PLAIN, "exact")), "<= 1.15"),
              ("exact / gumbel step, K = 10",
               ratios(find("step", "m2", "enum"), find("step", "m2", "gumbel")), ">= 2.5"),
              ("exact / gumbel step, K = 100",
               ratios(find("scaling", "m2", "enum", 100), find("scaling", "m2", "gumbel", 100)),
               ">= 10"),
              # the setting (two-digit MNIST, K = 100), then MNIST's shape, where
              # the decoder is half as wide and the K small passes weigh more
              ("hierarchical exact / M2 gumbel-cat-kl step, two-digit MNIST, K = 100",
               ratios(find("two-digit", "hierarchical", "enum", 100),
                      find("two-digit", "m2", "gumbel-cat-kl", 100)), "<= 2"),
              ("hierarchical exact / M2 gumbel-cat-kl step, K = 100, 784 pixels",
               ratios(find("hierarchical", "hierarchical", "enum", 100),
                      find("hierarchical", "m2", "gumbel-cat-kl", 100)), "<= 2")]
    out = []
    for name, (wall, cpu), goal in checks:
        bound = float(goal.split()[1])
        met = None if wall is None else (wall <= bound if goal.startswith("<") else wall >= bound)
        out.append((name, wall, cpu, goal, met))
    return out


def _num(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: dict | None, b: dict | None) -> float | None:
    """a's step time over b's, if both were measured."""
    return a["step_ms"] / b["step_ms"] if a and b and a.get("step_ms") and b.get("step_ms") else None


def format_report(rows: list[dict]) -> str:
    """The tables of the benchmark as Markdown."""
    first = rows[0]
    lines = [f"One training step = 100 unlabelled + 100 labelled images; every network one hidden "
             f"layer of 500 softplus units, z of 50 dims. Median of repeats after {first['warmup']} "
             f"warm-up steps; torch {first['torch']}, pyro {first['pyro']}, {first['device']}, "
             f"{first['threads']} thread(s).", "",
             "| model | inference | K | step ms | examples/s | CPU ms | x plain | repeats |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["section"] == "step":
            lines.append(f"| {r['model']} | {r['inference']} | {r['classes']} | {_num(r['step_ms'])} "
                         f"| {_num(r['examples_per_s'], 0)} | {_num(r['cpu_ms'])} "
                         f"| {_num(r.get('vs_plain'), 2)} | {r['repeats']} |"
                         + (f" failed: {r['error']}" if r.get("error") else ""))
    steps = {(r["model"], r["inference"]): r for r in rows if r["section"] == "step"}
    jit = [(r, steps.get((r["model"], r["inference"].removesuffix(" --jit"))))
           for r in steps.values() if r["inference"].endswith(" --jit")]
    if jit:
        lines += ["", "Pyro's JIT (`--jit`: JitTraceEnum_ELBO, JitTrace_ELBO), step time compiled / "
                  "uncompiled: " + "; ".join(
                      f"{r['model']}/{r['inference']} {_num(ratio(r, eager), 2)}"
                      for r, eager in jit) + "."]
    scaling = [r for r in rows if r["section"] == "scaling"]
    if scaling:
        ks = sorted({r["classes"] for r in scaling})
        lines += ["", "Step time (ms) against the number of classes K, synthetic data of MNIST's shape:",
                  "", "| K | " + " | ".join(SCALING_INFERENCES) + " | enum / gumbel |",
                  "|---:|" + "---:|" * (len(SCALING_INFERENCES) + 1)]
        for k in ks:
            by = {r["inference"]: r for r in scaling if r["classes"] == k}
            cells = [_num(by.get(i, {}).get("step_ms")) for i in SCALING_INFERENCES]
            lines.append(f"| {k} | " + " | ".join(cells)
                         + f" | {_num(by.get('gumbel', {}).get('speedup_vs_enum'), 1)} |")
    hierarchical = [r for r in rows if r["section"] == "hierarchical"]
    if hierarchical:
        lines += ["", "The hierarchical model (M1+M2, y touching only the small networks) against "
                  "M2's relaxed step, step time (ms), synthetic data of MNIST's shape:", "",
                  "| K | " + " | ".join(f"{m}/{i}" for m, i in HIERARCHICAL)
                  + " | hierarchical/enum / m2/gumbel-cat-kl |",
                  "|---:|" + "---:|" * (len(HIERARCHICAL) + 1)]
        for k in sorted({r["classes"] for r in hierarchical}):
            by = {(r["model"], r["inference"]): r for r in hierarchical if r["classes"] == k}
            cells = [_num(by.get(key, {}).get("step_ms")) for key in HIERARCHICAL]
            lines.append(f"| {k} | " + " | ".join(cells) + f" | "
                         f"{_num(by.get(('hierarchical', 'enum'), {}).get('vs_m2_gumbel_cat_kl'), 2)} |")
    two_digit = [r for r in rows if r["section"] == "two-digit"]
    if two_digit and two_digit[0].get("skipped"):
        lines += ["", f"Two-digit MNIST (K = 100): not measured ({two_digit[0]['error']})."]
    elif two_digit:
        lines += ["", "The step on real images with K = 100: two-digit MNIST, 1,568 pixels (28 x 56), "
                  "1,000 labels:", "",
                  "| model | inference | step ms | CPU ms | enum / this | on CPU time |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in two_digit:
            lines.append(f"| {r['model']} | {r['inference']} | {_num(r['step_ms'])} | "
                         f"{_num(r['cpu_ms'])} | {_num(r.get('speedup_vs_enum'), 1)} | "
                         f"{_num(r.get('cpu_speedup_vs_enum'), 1)} |"
                         + (f" failed: {r['error']}" if r.get("error") else ""))
    for r in rows:
        if r["section"] == "memory":
            lines += [""]
            if r.get("error"):
                lines.append(f"Peak memory of one MNIST epoch: not measured ({r['error']}).")
            else:
                lines.append(f"One MNIST epoch of m2/enum (`{r['command']}`): peak resident memory "
                             f"{r['peak_rss_mb']:,.0f} MiB, {r['seconds_per_epoch']:.1f} s for the "
                             f"epoch's steps, {r['examples_per_s']:,.0f} examples/s.")
    lines += ["", "| target | on step time | on CPU time | goal | met |", "|---|---:|---:|---|---|"]
    for name, wall, cpu, goal, met in targets(rows):
        verdict = "not measured" if met is None else ("yes" if met else "no")
        lines.append(f"| {name} | {_num(wall, 2)} | {_num(cpu, 2)} | {goal} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot_scaling(rows: list[dict], path: str | os.PathLike) -> None:
    """Step time against K on log-log axes, one line per inference method."""
    from ppl_ssvae.io import save_figure
    from ppl_ssvae.plots import plt

    scaling = [r for r in rows if r["section"] == "scaling" and r["step_ms"]]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for inference in SCALING_INFERENCES:
        points = sorted((r["classes"], r["step_ms"]) for r in scaling if r["inference"] == inference)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", ms=4, label=inference)
    hierarchical = sorted((r["classes"], r["step_ms"]) for r in rows
                          if r["section"] == "hierarchical" and r["model"] == "hierarchical"
                          and r["inference"] == "enum" and r["step_ms"])
    if hierarchical:
        ax.plot(*zip(*hierarchical, strict=True), marker="s", ms=4, label="hierarchical, enum")
    enum = sorted((r["classes"], r["step_ms"]) for r in scaling if r["inference"] == "enum")
    if len(enum) > 1:  # where enum would be if its cost grew in proportion to K
        (k0, ms0), k1 = enum[0], enum[-1][0]
        ax.plot([k0, k1], [ms0, ms0 * k1 / k0], ls=":", color="grey", label="proportional to K")
    ax.set(xscale="log", yscale="log", xlabel="number of classes K", ylabel="ms per training step",
           title="M2 (and the hierarchical model): exact sum over y against a sample")
    ks = sorted({r["classes"] for r in scaling})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend(frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[dict], out: str | os.PathLike) -> None:
    from ppl_ssvae.io import write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", rows)
    write_text(out / "bench.md", format_report(rows))
    if any(r["section"] == "scaling" for r in rows):
        plot_scaling(rows, out / "scaling_in_k.png")
