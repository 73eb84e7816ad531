"""What a training run writes down besides its checkpoint: the metrics row of an
epoch, whole or open (mean loss terms, validation accuracy, KL per latent dimension,
and the best-validation record it updates), what ``config.json`` records of the data,
and the figures (learning curves, KL per dimension, class-conditional samples)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ppl_ssvae import data as data_lib
from ppl_ssvae import distributed, evaluate, plots
from ppl_ssvae.checkpoint import State
from ppl_ssvae.config import Settings
from ppl_ssvae.objective import SSVAE

KL_SUBSET = 1000  # validation images used for the per-dimension KL


def data_info(data: data_lib.Dataset) -> dict:
    """What a run's ``config.json`` records of its data: the networks' sizes, the
    shape of one example, where the data came from."""
    return {"name": data.name, "source": data.source, "num_classes": data.num_classes,
            "x_dim": data.x_dim, "shape": list(data.shape)}


def epoch_row(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State, epoch: int,
              examples_per_step: int, lr: float) -> dict:
    """The metrics row of the epoch in ``state.in_epoch`` (so far): mean loss terms over
    the steps taken (null where every step was skipped), validation accuracy, KL per
    dimension; updates the best-validation record."""
    progress = state.in_epoch
    taken = progress.position - progress.skipped
    seconds = max(progress.seconds, 1e-9)
    steps_per_epoch = math.ceil(len(progress.order) / settings.batch_size)
    row = {"epoch": epoch, "epoch_fraction": round(progress.position / steps_per_epoch, 6),
           "step": state.step, "seconds": progress.seconds,
           "examples_per_second": progress.position * examples_per_step / seconds,
           **{key: value / taken if taken else None for key, value in progress.sums.items()},
           "skipped_steps": progress.skipped, "lr": lr}
    if distributed.is_main():  # the other ranks' rows are never written
        row.update(_evaluate(pair, data, settings, state, epoch))
    return row


def _evaluate(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State,
              epoch: int) -> dict:
    bs = settings.eval_batch_size
    valid_accuracy = evaluate.accuracy(pair, data.valid.x, data.valid.y, bs)
    kl = evaluate.kl_per_dimension(pair, data.valid.x[:KL_SUBSET], bs)
    row = {"valid_accuracy": valid_accuracy, "kl_per_dim": [round(v, 5) for v in kl.tolist()]}
    if valid_accuracy > state.best["valid_accuracy"]:
        state.best = {"valid_accuracy": valid_accuracy, "epoch": epoch,
                      "test_accuracy": evaluate.accuracy(pair, data.test.x, data.test.y, bs)}
    return row


def write_figures(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State,
                  out: Path, samples_per_class: int = 12) -> None:
    if not state.history:
        return
    name = f"{settings.model} / {settings.inference}, {settings.labels} labels"
    plots.learning_curves(state.history, out / "learning_curves.png", name)
    if not hasattr(pair.model, "decode"):  # no z, nothing to sample (the mlp classifier)
        return
    plots.kl_heatmap(state.history, out / "kl_per_dim.png",
                     f"{evaluate.kl_description(pair)} per dimension: {name}")
    k = data.num_classes
    with evaluate.evaluation(pair), torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        z = torch.randn(samples_per_class, settings.z_dim).to(data.train.x.device)
        z = z.expand(k, -1, -1)  # the same z in every row: the rows differ by class only
        y = torch.arange(k, device=z.device).unsqueeze(1).expand(-1, samples_per_class)
        images = pair.model.decode(z, y)
    layout = ("one row per class, the same z in each column" if k <= plots.MAX_ROWS
              else "one class per cell, the same z in every cell")
    plots.class_samples(images, out / "samples.png", f"p(x | y, z), {layout}: {name}", data.shape)


def final_valid_accuracy(state: State) -> float | None:
    """The last validation accuracy measured: an evaluations.jsonl row, or the partial
    epoch's row of a run stopped within an epoch (--max-steps), whichever came later."""
    last = state.evaluations[-1] if state.evaluations else None
    row = state.history[-1] if state.history else None
    if row is not None and row.get("valid_accuracy") is not None and (
            last is None or row["step"] > last["step"]):
        return row["valid_accuracy"]
    return last["valid_accuracy"] if last else None
