"""Training: one plain loop over epochs and steps.

Each step takes one batch of unlabelled images (an epoch is one pass over the
unlabelled set) and one batch of labelled images drawn with replacement from the
labelled set, as the original did; the plates scale both to full-data sums. After
every epoch the run measures validation accuracy and the KL of each latent
dimension, writes ``metrics.jsonl`` and a checkpoint; test accuracy is taken at the
best validation epoch and at the last.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ppl_ssvae import data as data_lib
from ppl_ssvae import evaluate, plots
from ppl_ssvae.batch import Batch, one_hot
from ppl_ssvae.config import Settings, validate
from ppl_ssvae.io import atomic_write, write_json, write_jsonl
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.registry import MODELS, build

CHECKPOINT_VERSION = 1
KL_SUBSET = 1000  # validation images used for the per-dimension KL


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, say); the message says why."""


@dataclass
class State:
    """What a checkpoint holds besides the networks and the optimiser."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps taken in all
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"valid_accuracy": -1.0})
    skipped: int = 0


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # torch, numpy and random


def draw_batch(data: data_lib.Dataset, labelled: torch.Tensor, settings: Settings,
               order: torch.Tensor, i: int, g: torch.Generator) -> Batch:
    """The i-th step's batch: a slice of this epoch's permutation of the unlabelled
    set, and labelled indices drawn with replacement; all on the data's device."""
    train = data.train
    idx_u = order[i * settings.batch_size:(i + 1) * settings.batch_size]
    draws = torch.randint(len(labelled), (settings.labelled_batch_size,), generator=g)
    idx_l = labelled[draws]
    device = train.x.device
    idx_u, idx_l = idx_u.to(device), idx_l.to(device)
    x_u, x_l = train.x[idx_u], train.x[idx_l]
    if settings.binarize:
        x_u, x_l = data_lib.binarize(x_u), data_lib.binarize(x_l)
    return Batch(x_u=x_u, x_l=x_l, y_l=one_hot(train.y[idx_l], data.num_classes),
                 n_u=len(train), n_l=len(labelled), idx_u=idx_u, idx_l=idx_l)


def train(settings: Settings) -> dict:
    """Train as ``settings`` say, write every output into ``settings.out``, and
    return the summary."""
    validate(settings)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    seed_everything(settings.seed)
    pyro.clear_param_store()

    data = data_lib.load(settings.dataset, settings.data_dir, settings.seed).to(device)
    labelled = data_lib.balanced_labels(data.train.y, settings.labels, data.num_classes,
                                        settings.seed)
    x_dim = data.train.x.shape[1]
    pair = build(settings, data.num_classes, x_dim).to(device)
    optimizer = torch.optim.Adam(pair.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    g = torch.Generator().manual_seed(settings.seed)  # data order and labelled draws
    state = State()

    checkpoint_path = out / "checkpoint.pt"
    if settings.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, settings, pair, optimizer, scheduler, g)
    write_json(out / "config.json", settings.to_dict())
    write_jsonl(out / "metrics.jsonl", state.history)

    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    examples_per_step = settings.batch_size + settings.labelled_batch_size
    bar = tqdm(total=total_steps, initial=state.step, disable=not settings.progress,
               unit="step", dynamic_ncols=True, desc=f"{settings.model}/{settings.inference}")

    while state.step < total_steps:
        pair.train()
        order = torch.randperm(len(data.train), generator=g)
        sums = {"loss": 0.0, "negative_elbo": 0.0, "classifier": 0.0}
        steps, skipped, started = 0, 0, time.perf_counter()
        for i in range(steps_per_epoch):
            if state.step >= total_steps:
                break
            batch = draw_batch(data, labelled, settings, order, i, g)
            terms = pair.loss_and_grads(batch, state.step)
            fault = _fault(pair, terms)
            if fault and settings.on_nan == "stop":
                bar.close()
                raise TrainingError(f"step {state.step}: {fault}; the last good checkpoint is "
                                    f"{checkpoint_path} (rerun with --resume, a lower --lr or "
                                    f"--on-nan skip)")
            if fault:
                skipped += 1
            else:
                if settings.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(pair.parameters(),
                                                   settings.clip_norm * batch.size)
                optimizer.step()
                for key in sums:
                    sums[key] += terms[key]
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            steps += 1
            bar.update()
            if state.step % 20 == 0 or state.step == total_steps:
                seconds = time.perf_counter() - started
                bar.set_postfix(loss=f"{terms['loss']:.1f}",
                                best_acc=f"{max(0.0, state.best['valid_accuracy']):.3f}",
                                ex_s=f"{steps * examples_per_step / seconds:.0f}")
        seconds = time.perf_counter() - started
        scheduler.step()
        state.epoch += 1
        state.skipped += skipped
        taken = max(1, steps - skipped)
        row = {"epoch": state.epoch, "step": state.step, "seconds": seconds,
               "examples_per_second": steps * examples_per_step / seconds,
               **{key: value / taken for key, value in sums.items()},
               "skipped_steps": skipped, "lr": optimizer.param_groups[0]["lr"]}
        row.update(_evaluate(pair, data, settings, state))
        state.history.append(row)
        write_jsonl(out / "metrics.jsonl", state.history)
        save_checkpoint(checkpoint_path, settings, pair, optimizer, scheduler, g, state)
    bar.close()

    summary = _summary(pair, data, settings, state)
    write_json(out / "summary.json", summary)
    write_figures(pair, data, settings, state, out)
    return summary


def _fault(pair: SSVAE, terms: dict) -> str | None:
    """Which term, if any, of the loss or its gradient is not finite."""
    for key in ("negative_elbo", "classifier"):
        if not math.isfinite(terms[key]):
            return f"the {key.replace('_', ' ')} term of the loss is {terms[key]}"
    for name, p in pair.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name} is not finite"
    return None


def _evaluate(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State) -> dict:
    bs = settings.eval_batch_size
    valid_accuracy = evaluate.accuracy(pair, data.valid.x, data.valid.y, bs)
    kl = evaluate.kl_per_dimension(pair, data.valid.x[:KL_SUBSET], bs)
    row = {"valid_accuracy": valid_accuracy, "kl_per_dim": [round(v, 5) for v in kl.tolist()]}
    if valid_accuracy > state.best["valid_accuracy"]:
        state.best = {"valid_accuracy": valid_accuracy, "epoch": state.epoch,
                      "test_accuracy": evaluate.accuracy(pair, data.test.x, data.test.y, bs)}
    return row


def _summary(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State) -> dict:
    bs = settings.eval_batch_size
    history = state.history
    train_seconds = sum(row["seconds"] for row in history)
    steps = history[-1]["step"] if history else 0
    examples = steps * (settings.batch_size + settings.labelled_batch_size)
    return {
        "model": settings.model,
        "inference": settings.inference,
        "labels": settings.labels,
        "seed": settings.seed,
        "epochs": state.epoch,
        "steps": state.step,
        "test_accuracy": state.best.get("test_accuracy"),
        "test_accuracy_last": evaluate.accuracy(pair, data.test.x, data.test.y, bs),
        "test_elbo": _test_elbo(pair, data, settings),
        "best_valid_accuracy": state.best["valid_accuracy"],
        "best_epoch": state.best.get("epoch"),
        "seconds_per_epoch": train_seconds / max(1, len(history)),
        "examples_per_second": examples / train_seconds if train_seconds else None,
        "skipped_steps": state.skipped,
        "device": settings.device,
    }


def _test_elbo(pair: SSVAE, data: data_lib.Dataset, settings: Settings) -> float | None:
    """ELBO per test image (nats), on a binarisation fixed by the seed; exact in y
    for models that accept enumeration. None for a model with no decoder."""
    if not hasattr(pair.model, "decode"):
        return None
    g = torch.Generator(device=data.test.x.device).manual_seed(settings.seed)
    x = data_lib.binarize(data.test.x, g) if settings.binarize else data.test.x
    exact = "enum" in MODELS[settings.model].inferences
    return evaluate.elbo_per_image(pair, x, settings.eval_batch_size // 2, settings.seed, exact)


def write_figures(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State,
                  out: Path, samples_per_class: int = 12) -> None:
    if not state.history:
        return
    name = f"{settings.model} / {settings.inference}, {settings.labels} labels"
    plots.learning_curves(state.history, out / "learning_curves.png", name)
    plots.kl_heatmap(state.history, out / "kl_per_dim.png",
                     f"KL(q(z|x) || p(z)) per dimension: {name}")
    k = data.num_classes
    with evaluate.evaluation(pair), torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        z = torch.randn(samples_per_class, settings.z_dim).to(data.train.x.device)
        z = z.expand(k, -1, -1)  # the same z in every row: the rows differ by class only
        y = torch.eye(k, device=z.device).unsqueeze(1).expand(-1, samples_per_class, -1)
        images = pair.model.decode(z, y)
    plots.class_samples(images, out / "samples.png",
                        f"p(x | y, z), one row per class, the same z in each column: {name}")


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, settings: Settings, pair: SSVAE, optimizer, scheduler,
                    g: torch.Generator, state: State) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": settings.model,
        "inference": settings.inference,
        "settings": settings.to_dict(),
        "networks": pair.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "data": g.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "best": state.best,
        "skipped": state.skipped,
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, settings: Settings, pair: SSVAE, optimizer, scheduler,
                    g: torch.Generator) -> State:
    payload = torch.load(path, map_location=settings.device, weights_only=True)
    pair.load_state_dict(payload["networks"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"]["torch"].cpu())
    g.set_state(payload["rng"]["data"].cpu())
    if payload["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
    return State(payload["epoch"], payload["step"], payload["history"], payload["best"],
                 payload["skipped"])
