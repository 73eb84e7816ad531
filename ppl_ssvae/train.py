"""Training: one plain loop over epochs and steps.

Each step takes one batch of unlabelled images (an epoch is one pass over the
unlabelled set) and one batch of labelled images drawn with replacement from the
labelled set, as the original did; the plates scale both to full-data sums. After
every epoch the run measures validation accuracy and the KL of each latent
dimension, writes a checkpoint and ``metrics.jsonl``; test accuracy is taken at the
best validation epoch and at the last, and the weights of the best validation epoch
are kept in ``best.pt`` (``ppl_ssvae.checkpoint.load_weights`` loads them). A run
stopped by ``--max-steps`` within an epoch records that epoch as the fraction of it
that was run (``epoch_fraction`` in its metrics row; ``epochs`` in the summary counts
whole epochs, ``epochs_trained`` the fraction).

Nothing is lost to a kill: a checkpoint (``ppl_ssvae.checkpoint``) is also written
every ``--checkpoint-every`` steps within an epoch, every file is replaced
atomically, and ``--resume`` goes on from the last checkpoint to exactly the
results of an uninterrupted run; ``--max-steps`` reached inside an epoch leaves it
open, so a resumed run continues it. The run holds its directory
(``ppl_ssvae.io.run_directory``) against a second run for as long as it lasts.
A loss or gradient that is not finite stops the run (``NumericalFault``) before it
touches the parameters, or with ``--on-nan skip`` the step is undone and counted.

A time budget: the run counts its training seconds (drawing batches and taking
steps; evaluation, checkpoints and logs excluded) on two clocks, the process's CPU
time and the wall clock. ``--time-limit S`` stops it at the first step boundary past
S seconds on ``--time-clock`` (CPU by default: on a machine shared with other jobs
the wall clock counts their time too), with the checkpoint and the summary written;
``--resume`` with a larger limit goes on. Every validation measurement, at each
epoch's end and every ``--eval-every-seconds`` within epochs, is a row of
``evaluations.jsonl`` with the step and the training seconds on both clocks.

Under ``torchrun`` the same loop runs data-parallel (``ppl_ssvae.distributed``):
each rank takes its share of every batch, one collective per step averages the
gradients, and rank 0 alone evaluates, writes and reports.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ppl_ssvae import data as data_lib
from ppl_ssvae import distributed, evaluate, plots
from ppl_ssvae.batch import Batch
from ppl_ssvae.budget import (
    budget_summary,
    evaluate_within_epoch,
    evaluation_due,
    over_time_limit,
    reached_accuracy,
    record_evaluation,
    timed,
)
from ppl_ssvae.checkpoint import (
    BEST_FILE,
    EpochProgress,
    State,
    load_checkpoint,
    pyro_side_params,
    read_checkpoint,
    rng_state,
    save_best,
    save_checkpoint,
    set_pyro_side_params,
)
from ppl_ssvae.config import Settings, validate
from ppl_ssvae.io import WriteError, run_directory, write_json, write_jsonl
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.progress import Progress
from ppl_ssvae.registry import MODELS, build, resolve

KL_SUBSET = 1000  # validation images used for the per-dimension KL
SKIPS_REPORTED = 10  # --on-nan skip: the first skips get a line on stderr, the rest a count


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


class NumericalFault(TrainingError):
    """A non-finite loss or gradient; the message names the step and the term."""


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # torch, numpy and random


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel where torch has that for the device (CPU since
    torch 2.4): ~5x cheaper per step than the per-tensor loop, the same update."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # older torch, or a device without a fused kernel
        return torch.optim.Adam(parameters, lr=lr)


def draw_batch(data: data_lib.Dataset, labelled: torch.Tensor, settings: Settings,
               order: torch.Tensor, i: int, g: torch.Generator) -> Batch:
    """The i-th step's batch: a slice of this epoch's permutation of the unlabelled
    set, and labelled indices drawn with replacement; all on the data's device. Under
    torchrun, this rank's share of both (every rank draws the whole batch alike)."""
    train = data.train
    idx_u = order[i * settings.batch_size:(i + 1) * settings.batch_size]
    draws = torch.randint(len(labelled), (settings.labelled_batch_size,), generator=g)
    idx_u, draws = distributed.shard(idx_u, wrap=order), distributed.shard(draws)
    idx_l = labelled[draws]
    device = train.x.device
    idx_u, idx_l = idx_u.to(device), idx_l.to(device)
    x_u, x_l = train.x[idx_u], train.x[idx_l]
    if settings.binarize:
        x_u, x_l = data_lib.binarize(x_u), data_lib.binarize(x_l)
    return Batch(x_u=x_u, x_l=x_l, y_l=train.y[idx_l],
                 n_u=len(train), n_l=len(labelled), idx_u=idx_u, idx_l=idx_l,
                 labelled_weight=settings.labelled_weight)


def train(settings: Settings, data: data_lib.Dataset | None = None) -> dict:
    """Train as ``settings`` say, write every output into ``settings.out``, and
    return the summary. With ``settings.resume`` it goes on from the checkpoint in
    ``settings.out``, if there is one, and ends exactly as an uninterrupted run would.
    Under torchrun every rank calls it; rank 0 writes, and every rank returns its summary.
    ``data`` is a data set already in memory (the scikit-learn estimator's), in place
    of loading ``settings.dataset``."""
    validate(settings)
    settings = resolve(settings)  # the model's default inference, if none was given; checked
    # before the data is read, and recorded as resolved in config.json
    data = _checked_data(settings, data)  # before --out is created: bad data leaves nothing
    with distributed.process_group(settings) as device, _held_directory(settings) as out:
        try:
            return _train(settings, out, device, data)
        except WriteError as e:
            raise TrainingError(f"{e}; once that is fixed, rerun with --resume to go on from "
                                f"the last checkpoint") from None


def _checked_data(settings: Settings, data: data_lib.Dataset | None) -> data_lib.Dataset:
    """The run's data, loaded and checked (range, labels) as ``_train`` uses them."""
    if data is None:
        data = data_lib.load(settings.dataset, settings.data_dir, settings.seed)
    data_lib.check_range(data, settings.likelihood == "bernoulli")
    data_lib.labelled_indices(data, settings.labels, settings.seed)
    return data


def _best_accuracy(state: State) -> dict:
    """The progress line's best_acc, once an accuracy has been measured."""
    best = state.best["valid_accuracy"]
    return {"best_acc": f"{best:.3f}"} if best >= 0 else {}


def _final_valid_accuracy(state: State) -> float | None:
    """The last validation accuracy measured: an evaluations.jsonl row, or the partial
    epoch's row of a run stopped within an epoch (--max-steps), whichever came later."""
    last = state.evaluations[-1] if state.evaluations else None
    row = state.history[-1] if state.history else None
    if row is not None and row.get("valid_accuracy") is not None and (
            last is None or row["step"] > last["step"]):
        return row["valid_accuracy"]
    return last["valid_accuracy"] if last else None


@contextlib.contextmanager
def _held_directory(settings: Settings) -> Iterator[Path]:
    """The run directory, held (and locked) for the whole run by rank 0, the one that
    writes; under torchrun the other ranks learn its path, or rank 0's error."""
    with contextlib.ExitStack() as stack:
        yield distributed.from_main(
            lambda: stack.enter_context(run_directory(settings.out, settings.resume)))


def _train(settings: Settings, out: Path, device: torch.device,
           data: data_lib.Dataset | None) -> dict:
    main = distributed.is_main()
    seed_everything(settings.seed)
    pyro.clear_param_store()

    if data is None:
        data = data_lib.load(settings.dataset, settings.data_dir, settings.seed)
    data = data.to(device)
    data_lib.check_range(data, settings.likelihood == "bernoulli")
    labelled = data_lib.labelled_indices(data, settings.labels, settings.seed)
    if data.labelled is not None and settings.progress:
        tqdm.write(f"ppl-ssvae: training with the {len(labelled)} labelled examples of "
                   f"{data.source} (--labels picks a subset of fully labelled data only)",
                   file=sys.stderr)
    x_dim = data.train.x.shape[1]
    pair = build(settings, data.num_classes, x_dim).to(device)
    optimizer = adam(pair.parameters(), settings.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    g = torch.Generator().manual_seed(settings.seed)  # data order and labelled draws
    state = State()
    distributed.seed_rank(settings.seed)

    checkpoint_path = out / "checkpoint.pt"
    payload = None  # read by rank 0 and handed to every rank
    if settings.resume:
        payload = distributed.from_main(
            lambda: read_checkpoint(checkpoint_path) if checkpoint_path.exists() else None)
    if payload is not None:
        state = load_checkpoint(checkpoint_path, settings, pair, optimizer, scheduler, g,
                                payload, distributed.rank(), distributed.world_size())
        _check_goes_on(state, settings, checkpoint_path)
    distributed.broadcast_state(pair)  # every rank starts from rank 0's parameters
    # metrics.jsonl is rewritten from the checkpoint: rows of a killed run's lost
    # steps, written after its last checkpoint, are dropped and come back identical
    if main:
        # the settings, and what the data fix about the networks: enough to rebuild the pair
        write_json(out / "config.json", {**settings.to_dict(), "data": data_info(data),
                                         "world_size": distributed.world_size()})
        write_jsonl(out / "metrics.jsonl", state.history)
        write_jsonl(out / "evaluations.jsonl", state.evaluations)
    saved_at = state.step if payload is not None else None

    def checkpoint() -> None:
        nonlocal saved_at
        rngs = distributed.gather(rng_state(g)) if distributed.world_size() > 1 else None
        if main:
            save_checkpoint(checkpoint_path, settings, pair, optimizer, scheduler, g, state, rngs)
        saved_at = state.step

    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    examples_per_step = settings.batch_size + settings.labelled_batch_size
    bar = Progress(total_steps, state.step, f"{settings.model}/{settings.inference}",
                   settings.progress and main)

    out_of_time = reached = False
    try:
        while state.step < total_steps:
            if state.in_epoch is None:  # --stop-at-accuracy: decided at epoch boundaries
                # rank 0 alone evaluates: its record decides for every rank
                reached = distributed.from_main(lambda: reached_accuracy(settings, state))
                if reached:
                    if main:
                        bar.write(f"ppl-ssvae: validation accuracy {state.best['valid_accuracy']:.4f} "
                                  f"(epoch {state.best['epoch']}) reached --stop-at-accuracy "
                                  f"{settings.stop_at_accuracy}: stopping after epoch {state.epoch}")
                    break
            if state.in_epoch is None:  # a new epoch; else one a checkpoint was taken in
                state.in_epoch = EpochProgress(torch.randperm(len(data.train), generator=g))
            progress = state.in_epoch
            pair.train()
            seconds_before, wall_before = progress.seconds, state.clock["wall"]
            for i in range(progress.position, steps_per_epoch):
                if state.step >= total_steps:
                    break
                out_of_time = over_time_limit(settings, state)
                if settings.time_limit is not None and distributed.world_size() > 1:
                    # rank 0's clock decides, so that every rank stops at the same step
                    out_of_time = distributed.from_main(lambda: over_time_limit(settings, state))
                if out_of_time:
                    break
                with timed(state.clock):
                    batch = draw_batch(data, labelled, settings, progress.order, i, g)
                    terms, fault = take_step(pair, optimizer, batch, state.step, settings)
                if fault and settings.on_nan == "stop":
                    kept = (f"{checkpoint_path} (step {saved_at}) is kept" if saved_at is not None
                            else "no checkpoint had been written yet")
                    raise NumericalFault(
                        f"step {state.step}: {fault}; {kept}: rerun with --resume --on-nan skip "
                        f"to skip such steps, or start over with a lower --lr or a --clip-norm")
                if fault:
                    progress.skipped += 1
                    if main and state.skipped + progress.skipped <= SKIPS_REPORTED:
                        bar.write(f"ppl-ssvae: step {state.step} skipped: {fault}")
                else:
                    for key in progress.sums:
                        progress.sums[key] += terms[key]
                state.step += 1
                progress.position = i + 1
                progress.seconds = seconds_before + state.clock["wall"] - wall_before
                postfix = {}
                if state.step % 20 == 0 or state.step == total_steps:
                    postfix = dict(loss=f"{terms['loss']:.1f}" if terms else "nan",
                                   **_best_accuracy(state),
                                   ex_s=f"{progress.position * examples_per_step / progress.seconds:.0f}")
                bar.update(**postfix)
                if main and evaluation_due(settings, state) and progress.position < steps_per_epoch:
                    evaluate_within_epoch(pair, data, settings, state, steps_per_epoch)
                    write_jsonl(out / "evaluations.jsonl", state.evaluations)
                if (settings.checkpoint_every and state.step % settings.checkpoint_every == 0
                        and progress.position < steps_per_epoch and state.step < total_steps):
                    checkpoint()  # mid-epoch; the epoch's end writes its own
            if out_of_time or progress.position < steps_per_epoch:
                break  # --time-limit or --max-steps in mid-epoch: the epoch stays open
            finish_epoch(pair, data, settings, state, scheduler, examples_per_step)
            if main:  # the other ranks do not evaluate
                bar.postfix.update(_best_accuracy(state))
                bar.epoch_done(state.epoch, state.history[-1]["valid_accuracy"])
                if state.best.get("epoch") == state.epoch:  # a new best: keep its weights
                    save_best(out / BEST_FILE, settings, pair, state)
            checkpoint()  # before metrics.jsonl: that file never runs ahead of the checkpoint
            if main:
                write_jsonl(out / "metrics.jsonl", state.history)
                write_jsonl(out / "evaluations.jsonl", state.evaluations)
        if state.in_epoch is not None:  # stopped in mid-epoch, for --resume to go on with it
            if out_of_time and main and (not state.evaluations
                                         or state.evaluations[-1]["step"] != state.step):
                evaluate_within_epoch(pair, data, settings, state, steps_per_epoch)
            if saved_at != state.step or out_of_time:
                checkpoint()  # the open epoch: data order, position, sums (and evaluations)
            # reported as a partial epoch, kept out of the checkpoint: a resumed run goes
            # on with the epoch, and its rows are those of a run never stopped
            lr = optimizer.param_groups[0]["lr"]
            row = epoch_row(pair, data, settings, state, state.epoch + 1, examples_per_step, lr)
            if main:
                bar.postfix.update(_best_accuracy(state))
                bar.stopped_in_epoch(state.epoch + 1, row["epoch_fraction"], row["valid_accuracy"])
                state.history.append(row | {"partial": True})
                if state.best.get("epoch") == state.epoch + 1:  # the summary's number: keep it
                    save_best(out / BEST_FILE, settings, pair, state)
                write_jsonl(out / "metrics.jsonl", state.history)
                write_jsonl(out / "evaluations.jsonl", state.evaluations)
    finally:
        bar.close()

    def finish() -> dict:
        summary = {**_summary(pair, data, settings, state), "labels": len(labelled)}
        summary.update(budget_summary(settings, state, steps_per_epoch, out_of_time, reached))
        summary["final_valid_accuracy"] = _final_valid_accuracy(state)
        write_json(out / "summary.json", summary)
        if settings.figures:
            write_figures(pair, data, settings, state, out)
        return summary

    return distributed.from_main(finish)


def data_info(data: data_lib.Dataset) -> dict:
    """What a run's ``config.json`` records of its data: the networks' sizes, the
    shape of one example, where the data came from."""
    return {"name": data.name, "source": data.source, "num_classes": data.num_classes,
            "x_dim": data.x_dim, "shape": list(data.shape)}


def take_step(pair: SSVAE, optimizer: torch.optim.Optimizer, batch: Batch, step: int,
              settings: Settings) -> tuple[dict | None, str | None]:
    """One optimiser step on ``batch``: the loss terms, and what was not finite if
    something was (then the parameters are left as they were)."""
    saved = _side_state(pair) if settings.on_nan == "skip" else None
    terms, invalid = None, None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")  # our message says it
        try:
            terms = pair.loss_and_grads(batch, step)
        except ValueError as e:  # distribution arguments Pyro's validation found not finite
            if "invalid values" not in str(e):
                raise
            invalid = f"the negative ELBO term is not finite ({_invalid_argument(e)})"
        # under torchrun: averaged over the ranks, so all of them see the same fault
        terms = distributed.average_gradients(pair, terms)
        fault = invalid or _fault(pair, terms)
    if fault is None:
        if settings.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(pair.parameters(), settings.clip_norm * batch.size)
        optimizer.step()
    elif saved is not None:
        _restore_side_state(pair, saved)
    optimizer.zero_grad(set_to_none=True)
    return terms, fault


def finish_epoch(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State,
                 scheduler, examples_per_step: int) -> None:
    """Close the epoch in ``state.in_epoch``: its metrics row, the best-validation
    record, the learning-rate schedule."""
    with warnings.catch_warnings():  # an epoch whose every step was skipped: no optimizer.step()
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()
    state.epoch += 1
    state.skipped += state.in_epoch.skipped
    row = epoch_row(pair, data, settings, state, state.epoch, examples_per_step,
                    scheduler.optimizer.param_groups[0]["lr"])
    state.history.append(row)
    state.in_epoch = None
    if distributed.is_main():  # the other ranks' rows and evaluations are never written
        record_evaluation(state, row["valid_accuracy"], state.epoch)


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


def _check_goes_on(state: State, settings: Settings, path: Path) -> None:
    """A resumed run may go on from its checkpoint, never back: refuse --epochs or
    --max-steps short of what the checkpoint has done (its config.json and summary.json
    would disagree)."""
    epochs = state.epoch + (state.in_epoch is not None)  # one begun counts
    if settings.epochs < epochs:
        begun = " (the last of them begun)" if state.in_epoch is not None else ""
        raise TrainingError(f"--epochs {settings.epochs} is fewer than the {epochs} epochs{begun} "
                            f"{path} has run: resume with --epochs {epochs} or more, or start "
                            f"over in another --out")
    if settings.max_steps is not None and settings.max_steps < state.step:
        raise TrainingError(f"--max-steps {settings.max_steps} is fewer than the {state.step} "
                            f"steps {path} has taken: resume with --max-steps {state.step} or "
                            f"more, or start over in another --out")


def _fault(pair: SSVAE, terms: dict) -> str | None:
    """Which term, if any, of the loss or its gradient is not finite."""
    for key, term in (("negative_elbo", "negative ELBO"), ("classifier", "classifier")):
        if not math.isfinite(terms[key]):
            return f"the {term} term of the loss is {terms[key]}"
    for name, p in pair.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name} is not finite"
    return None


def _invalid_argument(error: ValueError) -> str:
    """'logits of Categorical' from torch's 'Expected parameter logits (...) of
    distribution Categorical(...) to satisfy ...'."""
    words = str(error).split()
    try:
        parameter = words[words.index("parameter") + 1]
        family = words[words.index("distribution") + 1].split("(")[0]
        return f"{parameter} of a {family} distribution"
    except (ValueError, IndexError):
        return "a distribution's argument"


def _side_state(pair: SSVAE) -> dict:
    """What a step changes besides the parameters: batch-norm statistics, Pyro's
    baselines. A skipped step puts them back."""
    return {"buffers": {name: b.clone() for name, b in pair.named_buffers()},
            "pyro": pyro_side_params()}


def _restore_side_state(pair: SSVAE, saved: dict) -> None:
    with torch.no_grad():
        for name, b in pair.named_buffers():
            b.copy_(saved["buffers"][name])
    device = next(pair.parameters()).device
    set_pyro_side_params(saved["pyro"], device)


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


def _summary(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State) -> dict:
    bs = settings.eval_batch_size
    history = state.history
    train_seconds = sum(row["seconds"] for row in history)
    steps = history[-1]["step"] if history else 0
    examples = steps * (settings.batch_size + settings.labelled_batch_size)
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    whole = [row["seconds"] for row in history if row.get("epoch_fraction", 1.0) == 1.0]
    return {
        "model": settings.model,
        "inference": settings.inference,
        "dataset": settings.dataset,
        "classes": data.num_classes,
        "labels": settings.labels,
        "seed": settings.seed,
        # whole epochs: 0 for --max-steps 200 at 500 steps an epoch (budget_summary's
        # epochs_trained says 0.4)
        "epochs": state.step // steps_per_epoch,
        "steps": state.step,
        "steps_per_epoch": steps_per_epoch,
        "test_accuracy": state.best.get("test_accuracy"),
        "test_accuracy_last": evaluate.accuracy(pair, data.test.x, data.test.y, bs),
        "test_elbo": _test_elbo(pair, data, settings),
        "best_valid_accuracy": state.best["valid_accuracy"],
        "best_epoch": state.best.get("epoch"),
        "seconds": train_seconds,
        "seconds_per_step": train_seconds / steps if steps else None,
        # over whole epochs only: None when the run never finished one
        "seconds_per_epoch": sum(whole) / len(whole) if whole else None,
        "examples_per_second": examples / train_seconds if train_seconds else None,
        "skipped_steps": state.skipped + (state.in_epoch.skipped if state.in_epoch else 0),
        "device": settings.device,
        "world_size": distributed.world_size(),
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
