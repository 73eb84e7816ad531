"""What the unlabelled term does to the classifier, measured during training.

    python -m experiments.diagnose --model logistic-normal-prior --inference reparam \
        --steps 1500 --every 100 --out experiments/results/reproduction/diagnosis/lnp

Trains a pair with the library's own step (``ppl_ssvae.train.take_step``, the settings
of ``experiments/configs`` for that row unless given) and, every ``--every`` steps, on
fixed batches, records:

- ``valid_accuracy`` on the first ``--valid`` validation images;
- ``margin_labelled`` / ``margin_valid``: the mean gap between the top two logits of the
  classifier on the labelled images and on validation images (how confident it is, where
  it was taught and where it is judged);
- ``kl_y``: the mean KL of q(y|x) (or q(a|x), per dimension for the logistic-normal
  prior) from the prior, the price the unlabelled term puts on a confident classifier;
- the gradient that the unlabelled ELBO (the term that makes the method
  semi-supervised) sends to the classifier's parameters, over ``--draws`` repeated draws
  on the same batch: its mean's norm, its relative variance (E|g - mean|^2 / |mean|^2:
  above 1, a single draw is mostly noise), and the cosine between its mean and the
  gradient that *lowers* the cross-entropy of the true labels of held-out validation
  images (positive: the unlabelled term teaches the classifier the right classes;
  negative: it teaches them away). The classifier term's gradient norm is beside it;
- for the logistic-normal prior, ``class_code``: what the class weights carry (the KL of
  q(a|x) from the prior, the share of its mean's variance that lies between classes,
  the entropy of alpha = softmax(a)), and for every model ``where_the_class_is``: how
  much the decoder's picture depends on the class, and how much of the class a linear
  probe reads from q(z|x, .); per label site for a model with several (the two-digit
  model's y1, y2: each digit's accuracy, decoder share and probe), and from z1 and z2
  apart for the hierarchical model.

Writes ``diagnosis.json`` (one row per measurement) and ``diagnosis.png``;
``--compare DIR ... --out FIGURE.png`` draws several diagnoses in one figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from experiments.compare import resolve  # noqa: E402
from experiments.probes import (  # noqa: E402
    class_code,
    classifier_parameters,
    code_of_runs,
    elbo_gradients,
    flat_grad,
    kl_from_prior,
    shared_signal,
)
from ppl_ssvae import data as data_lib  # noqa: E402
from ppl_ssvae.batch import Batch  # noqa: E402
from ppl_ssvae.config import Settings  # noqa: E402
from ppl_ssvae.evaluate import evaluation  # noqa: E402
from ppl_ssvae.io import save_figure, write_json  # noqa: E402
from ppl_ssvae.registry import build  # noqa: E402
from ppl_ssvae.train import adam, draw_batch, seed_everything, take_step  # noqa: E402


def margin(logits: torch.Tensor) -> float:
    top = logits.topk(2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).mean())


def kl_of_classifier(pair, logits: torch.Tensor, x: torch.Tensor) -> list[float]:
    """KL of the classifier's distribution from the prior: q(a|x) per dimension for the
    logistic-normal prior (a Gaussian), else KL(q(y|x) || Cat(1/K)) as one number."""
    scores = getattr(pair.guide, "scores", None)
    if scores is not None and hasattr(pair.model, "a_loc"):
        return [float(v) for v in kl_from_prior(pair, *scores(x)).mean(0)]
    log_q = logits.log_softmax(-1)
    return [float((log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(-1).mean())]


def measure(pair, batch, valid_x, valid_y, labelled_x, params, draws: int, step: int) -> dict:
    row = {"step": step}
    with evaluation(pair):
        logits_valid = pair.classify(valid_x)
        row["valid_accuracy"] = float((logits_valid.argmax(-1) == valid_y).float().mean())
        row["margin_valid"] = margin(logits_valid)
        row["margin_labelled"] = margin(pair.classify(labelled_x))
        row["kl_y"] = kl_of_classifier(pair, logits_valid, valid_x)
    if hasattr(pair.model, "a_loc"):  # class weights with a logistic-normal prior
        row["class_code"] = class_code(pair, valid_x, valid_y)
    # the direction that lowers held-out cross-entropy (eval mode: no dropout noise)
    was = pair.training
    pair.eval()
    pair.zero_grad(set_to_none=True)
    F.cross_entropy(pair.guide.classify(valid_x[:1000]), valid_y[:1000]).backward()
    descent = -flat_grad(params)
    pair.train(was)
    # the unlabelled ELBO's gradient, draw after draw on one batch
    unlabelled = Batch(x_u=batch.x_u, n_u=batch.n_u, idx_u=batch.idx_u)
    g = elbo_gradients(pair, unlabelled, params, draws)
    mean = g.mean(0)
    row["elbo_grad_norm"] = float(mean.norm())
    row["elbo_grad_relative_variance"] = float(((g - mean) ** 2).sum(-1).mean() / mean.norm() ** 2)
    row["elbo_grad_cosine_with_heldout_descent"] = float(F.cosine_similarity(mean, descent, dim=0))
    classifier = pair.classifier_loss(batch, step)
    classifier.backward()
    row["classifier_grad_norm"] = float(flat_grad(params).norm())
    pair.zero_grad(set_to_none=True)
    return row


PANELS = [  # (title, y of a row, log scale)
    ("validation accuracy (%)", lambda r: 100 * r["valid_accuracy"], False),
    ("top-2 logit margin, validation images", lambda r: r["margin_valid"], False),
    ("KL of the classifier's q from the prior\n(nats, mean per dimension)",
     lambda r: sum(r["kl_y"]) / len(r["kl_y"]), False),
    ("cos(unlabelled ELBO gradient,\nheld-out cross-entropy descent)",
     lambda r: r["elbo_grad_cosine_with_heldout_descent"], False),
    ("relative variance of the\nunlabelled ELBO gradient", lambda r: r["elbo_grad_relative_variance"],
     True),
    ("its noise per draw (rms deviation)\nover the supervised gradient's norm",
     lambda r: noise(r) / r["classifier_grad_norm"], True),
]


CODE_PANEL = ("mean scale of q(a | x)\n(the prior's: 1 / temperature)",
              lambda r: r["class_code"]["scale_mean"] if "class_code" in r else math.nan, False)


def noise(row: dict) -> float:
    """The root-mean-square deviation of one draw of the unlabelled ELBO's gradient from
    its mean: sqrt(relative variance) x the mean's norm."""
    return math.sqrt(row["elbo_grad_relative_variance"]) * row["elbo_grad_norm"]


def figure(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    """One panel per measurement, one line per run; with the logistic-normal prior, a
    panel for the scale of q(a | x)."""
    panels = PANELS + [CODE_PANEL] * any("class_code" in r for rows in runs.values() for r in rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8))
    for name, rows in runs.items():
        steps = [r["step"] for r in rows]
        for ax, (_, value, _) in zip(axes, panels, strict=True):
            ax.plot(steps, [value(r) for r in rows], marker="o", ms=3, label=name)
    for ax, (panel, _, log) in zip(axes, panels, strict=True):
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[3].axhline(0, color="grey", lw=0.8)
    if len(runs) > 1:
        axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def compare(directories: list[Path], path: Path, title: str) -> None:
    """The figure of several diagnoses, each named by its directory."""
    runs = {d.name: json.loads((d / "diagnosis.json").read_text())["rows"] for d in directories}
    figure(runs, path, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs="+", type=Path, default=None, metavar="DIR",
                        help="only draw the diagnoses in these directories into one figure, "
                        "--out (a .png)")
    parser.add_argument("--code", nargs="+", type=Path, default=None, metavar="RUN",
                        help="only measure where trained runs keep the class (class_code for "
                        "the logistic-normal prior; for the ADGM, what its auxiliary a does "
                        "for the classifier; per digit for two-digit, in z1 and z2 for "
                        "hierarchical), at their best-validation and last weights, into "
                        "--out (a .json)")
    parser.add_argument("--signal", nargs="+", type=Path, default=None, metavar="RUN",
                        help="only measure, at trained runs' best weights, the classifier's ELBO "
                        "gradient noise with and without the labelled images in the same ELBO "
                        "call (shared_signal), into --out (a .json)")
    parser.add_argument("--clip", nargs="+", type=float, default=None, metavar="C",
                        help="with --signal: also the training step's gradient, raw and "
                        "clipped at each --clip-norm C (per image)")
    parser.add_argument("--title", default="", help="the --compare figure's title")
    parser.add_argument("--row",
                        help="MODEL/INFERENCE or a config name, as for experiments.compare")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--draws", type=int, default=8, help="ELBO gradient draws per measurement")
    parser.add_argument("--valid", type=int, default=2000, help="validation images measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings to change, e.g. classifier_weight=10 (JSON values)")
    parser.add_argument("--dataset", default=None,
                        help="the data (default: mnist to train; with --code and --signal, each "
                        "run's own)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.compare:
        compare(args.compare, args.out, args.title)
        print(f"wrote {args.out}")
        return 0
    if args.code or args.signal:
        from ppl_ssvae.checkpoint import CheckpointError
        from ppl_ssvae.run import RunError

        try:
            measured = (code_of_runs(args.code, args.valid, args.dataset) if args.code else
                        {str(r): shared_signal(r, args.draws, args.dataset, args.clip)
                         for r in args.signal})
        except (RunError, CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_json(args.out, measured)
        print(f"wrote {args.out}")
        return 0
    if not args.row:
        parser.error("--row is required (or --compare, --code or --signal)")

    key, model, inference, config = resolve(args.row)
    changes = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = Settings.from_dict({**config, **changes, "model": model, "inference": inference,
                                   "seed": args.seed, "dataset": args.dataset or "mnist",
                                   "progress": False})
    seed_everything(settings.seed)
    data = data_lib.load(settings.dataset, settings.data_dir, settings.seed)
    labelled = data_lib.balanced_labels(data.train.y, settings.labels, data.num_classes, settings.seed)
    pair = build(settings, data.num_classes, data.train.x.shape[1])
    optimizer = adam(pair.parameters(), settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    valid_x, valid_y = data.valid.x[:args.valid], data.valid.y[:args.valid]
    labelled_x = data.train.x[labelled]
    params = classifier_parameters(pair, valid_x)
    probe_g = torch.Generator().manual_seed(12345)
    probe = draw_batch(data, labelled, settings, torch.randperm(len(data.train), generator=probe_g),
                       0, probe_g)
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    rows, order = [], None
    for step in range(args.steps + 1):
        if step % args.every == 0:
            rows.append(measure(pair, probe, valid_x, valid_y, labelled_x, params, args.draws, step))
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else
                                  [round(x, 3) for x in v] if isinstance(v, list) else v)
                              for k, v in rows[-1].items()}), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            write_json(args.out / "diagnosis.json", {"row": key, "settings": settings.to_dict(),
                                                     "rows": rows})
        if step == args.steps:
            break
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(data.train), generator=g)
        pair.train()
        batch = draw_batch(data, labelled, settings, order, step % steps_per_epoch, g)
        take_step(pair, optimizer, batch, step, settings)
    changed = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                        for k, v in changes.items())
    figure({key: rows}, args.out / "diagnosis.png",
           f"{key}{' (' + changed + ')' if changed else ''}, seed {args.seed}")
    print(f"wrote {args.out}/diagnosis.json and diagnosis.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
