"""The model's posterior over y against the guide's classifier, for one trained run.

For each test image: the label of q(y | x) (the guide's classifier, what ``predict``
reports) and the MAP label of the model's own posterior p(y | x, z), computed by
Pyro's ``infer_discrete`` with z drawn from the guide (``ppl_ssvae.evaluate
.posterior_labels``), and a draw from that posterior (temperature 1). Prints the
accuracy of each and how often they agree, as a Markdown table::

    python -m experiments.posterior --run runs/m2 [--images 10000] [--out table.md]

The run's best-validation weights are used (``best.pt``; ``checkpoint.pt`` for a
run written before they were kept). Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ppl_ssvae import Settings, build, evaluate
from ppl_ssvae import data as data_lib
from ppl_ssvae.checkpoint import load_weights
from ppl_ssvae.io import write_text


def compare(run: Path, images: int = 10_000, chunk: int = 500, seed: int = 0) -> dict:
    settings = Settings.from_dict(json.loads((run / "config.json").read_text()))
    data = data_lib.load(settings.dataset, settings.data_dir, settings.seed)
    pair = build(settings, data.num_classes, data.test.x.shape[1])
    loaded = load_weights(pair, run)
    x, y = data.test.x[:images], data.test.y[:images]
    torch.manual_seed(seed)
    guide = evaluate.predict(pair, x).argmax(-1)
    labels = {0: [], 1: []}
    for part in x.split(chunk):
        latents = evaluate.guide_latents(pair, part)  # one z per image, y ~ q(y|x) on the way
        for temperature in labels:
            labels[temperature].append(
                evaluate.posterior_labels(pair, part, temperature, latents))
    map_labels, drawn = torch.cat(labels[0]), torch.cat(labels[1])
    rate = lambda a, b: float((a == b).float().mean())
    return {"run": str(run), "weights": loaded["which"], "epoch": loaded["epoch"],
            "images": len(x), "accuracy_q": rate(guide, y), "accuracy_map": rate(map_labels, y),
            "accuracy_draw": rate(drawn, y), "agreement_map": rate(guide, map_labels),
            "agreement_draw": rate(guide, drawn)}


def markdown(r: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}%"
    return (f"| labels of {r['images']:,} test images | accuracy | agree with q(y\\|x) |\n"
            f"|---|---:|---:|\n"
            f"| q(y\\|x), the guide's classifier | {pct(r['accuracy_q'])} | |\n"
            f"| argmax p(y\\|x, z), `infer_discrete` temperature 0 | {pct(r['accuracy_map'])} "
            f"| {pct(r['agreement_map'])} |\n"
            f"| a draw of p(y\\|x, z), temperature 1 | {pct(r['accuracy_draw'])} "
            f"| {pct(r['agreement_draw'])} |\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a training run's --out")
    parser.add_argument("--images", type=int, default=10_000, help="test images to label")
    parser.add_argument("--out", type=Path, help="also write the table (and JSON) here")
    args = parser.parse_args(argv)
    result = compare(args.run, args.images)
    table = markdown(result)
    print(json.dumps(result, indent=1))
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, table)
        write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
