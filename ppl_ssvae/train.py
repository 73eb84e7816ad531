"""Training: one plain loop over epochs and steps (``_train``).

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

A time budget (``ppl_ssvae.budget``): the run counts its training seconds (drawing
batches and taking steps; evaluation, checkpoints and logs excluded) on the CPU and the
wall clock; ``--time-limit S`` stops it at the first step boundary past S seconds on
``--time-clock``, with the checkpoint and the summary written, and ``--resume`` with a
larger limit goes on. Every validation measurement, at each epoch's end and every
``--eval-every-seconds`` within epochs, is a row of ``evaluations.jsonl``.

Under ``torchrun`` the same loop runs data-parallel (``ppl_ssvae.distributed``):
each rank takes its share of every batch, one collective per step averages the
gradients, and rank 0 alone evaluates, writes and reports.

Around the loop, each concern in its module: the batch, the step and the NaN guard in
``ppl_ssvae.step``; the clocks, the time limit and the stop at an accuracy in
``budget``; checkpoints and resuming in ``checkpoint``; the metrics rows and figures
in ``records``; the progress line in ``progress``.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ppl_ssvae import data as data_lib
from ppl_ssvae import distributed, evaluate
from ppl_ssvae.budget import (
    budget_summary,
    evaluate_within_epoch,
    evaluation_due,
    record_evaluation,
    stop_at_accuracy,
    time_is_up,
    timed,
)
from ppl_ssvae.checkpoint import BEST_FILE, EpochProgress, State, resume, save_best, write_checkpoint
from ppl_ssvae.config import Settings, validate
from ppl_ssvae.io import WriteError, run_directory, write_json, write_jsonl
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.progress import Progress, best_accuracy, step_fields
from ppl_ssvae.records import data_info, epoch_row, final_valid_accuracy, write_figures
from ppl_ssvae.registry import MODELS, build, resolve
from ppl_ssvae.step import adam, draw_batch, take_step

SKIPS_REPORTED = 10  # --on-nan skip: the first skips get a line on stderr, the rest a count


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


class NumericalFault(TrainingError):
    """A non-finite loss or gradient; the message names the step and the term."""


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # torch, numpy and random


def train(settings: Settings, data: data_lib.Dataset | None = None) -> dict:
    """Train as ``settings`` say, write every output into ``settings.out``, and
    return the summary. With ``settings.resume`` it goes on from the checkpoint in
    ``settings.out``, if there is one, and ends exactly as an uninterrupted run would.
    Under torchrun every rank calls it; rank 0 writes, and every rank returns its summary.

    Args:
        settings: every setting of the run (`ppl-ssvae train` builds them from its options).
        data: a data set already in memory (the scikit-learn estimator's), in place of
            loading ``settings.dataset``.

    Returns:
        The run's summary, as written to ``summary.json``: ``test_accuracy`` at the
        best-validation epoch, ``best_valid_accuracy``, ``best_epoch``, timings, ...
    """
    validate(settings)
    settings = resolve(settings)  # the model's default inference, if none was given; checked
    # before the data is read, and recorded as resolved in config.json

    data = _checked_data(settings, data)  # before --out is created: bad data leaves nothing
    # the run directory, held (and locked) for the whole run by rank 0, the one that writes
    held = lambda: run_directory(settings.out, settings.resume)
    with distributed.process_group(settings) as device, distributed.entered_on_main(held) as out:
        try:
            return _train(settings, out, device, data)
        except WriteError as e:
            raise TrainingError(f"{e}; once that is fixed, rerun with --resume to go on from "
                                f"the last checkpoint") from None


@dataclass
class Training:
    """A run in progress: what the loop reads and changes. ``state`` is what the
    checkpoint holds besides the networks, the optimiser and the generators."""

    settings: Settings
    out: Path
    data: data_lib.Dataset
    labelled: torch.Tensor  # indices of the labelled examples in data.train
    pair: SSVAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    g: torch.Generator  # the data order and the labelled draws
    state: State = field(default_factory=State)
    saved_at: int | None = None  # the step of the last checkpoint (None: none written yet)

    def __post_init__(self):
        self.steps_per_epoch = math.ceil(len(self.data.train) / self.settings.batch_size)
        self.total_steps = self.steps_per_epoch * self.settings.epochs
        if self.settings.max_steps is not None:
            self.total_steps = min(self.total_steps, self.settings.max_steps)
        self.examples_per_step = self.settings.batch_size + self.settings.labelled_batch_size

    def checkpoint(self) -> None:
        """checkpoint.pt as the run stands (every rank calls it; rank 0 writes)."""
        write_checkpoint(self.out / "checkpoint.pt", self.settings, self.pair, self.optimizer,
                         self.scheduler, self.g, self.state)
        self.saved_at = self.state.step

    def write_records(self) -> None:
        """metrics.jsonl and evaluations.jsonl as the state has them (rank 0 writes)."""
        if distributed.is_main():
            write_jsonl(self.out / "metrics.jsonl", self.state.history)
            write_jsonl(self.out / "evaluations.jsonl", self.state.evaluations)


def _checked_data(settings: Settings, data: data_lib.Dataset | None) -> data_lib.Dataset:
    """The run's data, loaded and checked (range, labels) as ``_train`` uses them."""
    if data is None:
        data = data_lib.load(settings.dataset, settings.data_dir, settings.seed)
    data_lib.check_range(data, settings.likelihood == "bernoulli")
    data_lib.labelled_indices(data, settings.labels, settings.seed)
    return data


def _train(settings: Settings, out: Path, device: torch.device,
           data: data_lib.Dataset | None) -> dict:
    """The loop: for each epoch, for each step, draw a batch, take a step and account for
    it; at the epoch's end evaluate, keep the best weights, checkpoint. It stops at the
    last step of --epochs or --max-steps, at --time-limit, or at --stop-at-accuracy."""
    run = _start(settings, out, device, data)
    state, main = run.state, distributed.is_main()
    bar = Progress(run.total_steps, state.step, f"{settings.model}/{settings.inference}",
                   settings.progress and main, messages=main)
    out_of_time = reached = False
    try:
        while state.step < run.total_steps:
            if state.in_epoch is None:  # between epochs: a new one, unless the accuracy is reached
                if reached := stop_at_accuracy(settings, state):
                    bar.stopped_at_accuracy(state.best, settings.stop_at_accuracy, state.epoch)
                    break
                state.in_epoch = EpochProgress(torch.randperm(len(run.data.train), generator=run.g))
            epoch = state.in_epoch  # a new epoch, or the one a checkpoint was taken in
            run.pair.train()
            seconds_before, wall_before = epoch.seconds, state.clock["wall"]
            for i in range(epoch.position, run.steps_per_epoch):
                if state.step >= run.total_steps:
                    break  # --max-steps
                if out_of_time := time_is_up(settings, state):
                    break
                with timed(state.clock):
                    batch = draw_batch(run.data, run.labelled, settings, epoch.order, i, run.g)
                    terms, fault = take_step(run.pair, run.optimizer, batch, state.step, settings)
                _account(run, terms, fault, bar, seconds_before + state.clock["wall"] - wall_before)
                _within_epoch(run)
            if out_of_time or epoch.position < run.steps_per_epoch:
                break  # --time-limit or --max-steps in mid-epoch: the epoch stays open
            finish_epoch(run)  # its metrics row and validation accuracy
            if main:  # the other ranks do not evaluate
                bar.postfix.update(best_accuracy(state.best["valid_accuracy"]))
                bar.epoch_done(state.epoch, state.history[-1]["valid_accuracy"])
            _keep_best(run, state.epoch)
            run.checkpoint()  # before metrics.jsonl: that file never runs ahead of the checkpoint
            run.write_records()
        if state.in_epoch is not None:  # stopped in mid-epoch
            _leave_epoch_open(run, bar, out_of_time)
    finally:
        bar.close()
    return distributed.from_main(lambda: _finish(run, out_of_time, reached))


def _start(settings: Settings, out: Path, device: torch.device,
           data: data_lib.Dataset | None) -> Training:
    """The run as it starts: the data, the networks and the optimiser, fresh or as the
    checkpoint left them (--resume); config.json written and the records rewritten."""
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
    pair = build(settings, data.num_classes, data.train.x.shape[1]).to(device)
    optimizer = adam(pair.parameters(), settings.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    g = torch.Generator().manual_seed(settings.seed)  # data order and labelled draws
    run = Training(settings, out, data, labelled, pair, optimizer, scheduler, g)
    distributed.seed_rank(settings.seed)
    if settings.resume:
        state = resume(out / "checkpoint.pt", settings, pair, optimizer, scheduler, g)
        if state is not None:
            _check_goes_on(state, settings, out / "checkpoint.pt")
            run.state, run.saved_at = state, state.step
    distributed.broadcast_state(pair)  # every rank starts from rank 0's parameters
    if distributed.is_main():
        # the settings, and what the data fix about the networks: enough to rebuild the pair
        write_json(out / "config.json", {**settings.to_dict(), "data": data_info(data),
                                         "world_size": distributed.world_size()})
    # rewritten from the checkpoint: rows of a killed run's lost steps, written after its
    # last checkpoint, are dropped and come back identical
    run.write_records()
    return run


def _account(run: Training, terms: dict | None, fault: str | None, bar: Progress,
             seconds: float) -> None:
    """Count the step just taken: its loss terms into the epoch's sums, or what
    --on-nan says for one that was not finite; the step, the epoch's position and
    ``seconds``, and the progress line."""
    state, epoch = run.state, run.state.in_epoch
    if fault:
        _on_fault(run, fault, bar)
    else:
        for key in epoch.sums:
            epoch.sums[key] += terms[key]
    state.step += 1
    epoch.position += 1
    epoch.seconds = seconds
    bar.update(**step_fields(state.step, run.total_steps, terms, state.best["valid_accuracy"],
                             epoch.position * run.examples_per_step, epoch.seconds))


def _on_fault(run: Training, fault: str, bar: Progress) -> None:
    """--on-nan, for a step whose loss or gradient was not finite (``take_step`` left the
    parameters as they were): ``stop`` raises a NumericalFault that says what to do;
    ``skip`` counts the step as skipped, and the first ``SKIPS_REPORTED`` get a line."""
    state = run.state
    if run.settings.on_nan == "stop":
        kept = (f"{run.out / 'checkpoint.pt'} (step {run.saved_at}) is kept"
                if run.saved_at is not None else "no checkpoint had been written yet")
        raise NumericalFault(
            f"step {state.step}: {fault}; {kept}: rerun with --resume --on-nan skip "
            f"to skip such steps, or start over with a lower --lr or a --clip-norm")
    state.in_epoch.skipped += 1
    if state.skipped + state.in_epoch.skipped <= SKIPS_REPORTED:
        bar.write(f"ppl-ssvae: step {state.step} skipped: {fault}")


def _within_epoch(run: Training) -> None:
    """Between two steps of an epoch (its end does its own): a validation measurement
    when --eval-every-seconds says one is due, a checkpoint every --checkpoint-every steps."""
    settings, state = run.settings, run.state
    if state.in_epoch.position == run.steps_per_epoch:
        return
    if evaluation_due(settings, state) and distributed.is_main():
        evaluate_within_epoch(run.pair, run.data, settings, state, run.steps_per_epoch)
        write_jsonl(run.out / "evaluations.jsonl", state.evaluations)
    if (settings.checkpoint_every and state.step % settings.checkpoint_every == 0
            and state.step < run.total_steps):
        run.checkpoint()


def finish_epoch(run: Training) -> None:
    """Close the epoch in ``state.in_epoch``: the learning-rate schedule, its metrics row
    (with the best-validation record) and its evaluations.jsonl row."""
    state = run.state
    with warnings.catch_warnings():  # an epoch whose every step was skipped: no optimizer.step()
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        run.scheduler.step()
    state.epoch += 1
    state.skipped += state.in_epoch.skipped
    row = epoch_row(run.pair, run.data, run.settings, state, state.epoch, run.examples_per_step,
                    run.optimizer.param_groups[0]["lr"])
    state.history.append(row)
    state.in_epoch = None
    if distributed.is_main():  # the other ranks' rows and evaluations are never written
        record_evaluation(state, row["valid_accuracy"], state.epoch)


def _keep_best(run: Training, epoch: int) -> None:
    """The weights of ``epoch``, just measured, in best.pt if it set a new best validation
    accuracy: the weights behind summary.json's test_accuracy (rank 0, which evaluates)."""
    if distributed.is_main() and run.state.best.get("epoch") == epoch:
        save_best(run.out / BEST_FILE, run.settings, run.pair, run.state)


def _leave_epoch_open(run: Training, bar: Progress, out_of_time: bool) -> None:
    """A run stopped in mid-epoch (--max-steps, --time-limit) leaves the epoch open, for
    --resume to go on with: the checkpoint holds its data order, position and sums. It
    is reported as a partial metrics row, kept out of the checkpoint: a resumed run goes
    on with the epoch, and its rows are those of a run never stopped."""
    state, main = run.state, distributed.is_main()
    if out_of_time and main and (not state.evaluations
                                 or state.evaluations[-1]["step"] != state.step):
        evaluate_within_epoch(run.pair, run.data, run.settings, state, run.steps_per_epoch)
    if run.saved_at != state.step or out_of_time:
        run.checkpoint()  # the open epoch: data order, position, sums (and evaluations)
    row = epoch_row(run.pair, run.data, run.settings, state, state.epoch + 1,
                    run.examples_per_step, run.optimizer.param_groups[0]["lr"])
    if main:
        bar.postfix.update(best_accuracy(state.best["valid_accuracy"]))
        bar.stopped_in_epoch(state.epoch + 1, row["epoch_fraction"], row["valid_accuracy"])
        state.history.append(row | {"partial": True})
    _keep_best(run, state.epoch + 1)  # the summary's number
    run.write_records()


def _finish(run: Training, out_of_time: bool, reached: bool) -> dict:
    """summary.json (rank 0 alone) and the figures; the summary."""
    settings, state = run.settings, run.state
    summary = {**_summary(run.pair, run.data, settings, state), "labels": len(run.labelled)}
    summary.update(budget_summary(settings, state, run.steps_per_epoch, out_of_time, reached))
    summary["final_valid_accuracy"] = final_valid_accuracy(state)
    write_json(run.out / "summary.json", summary)
    if settings.figures:
        write_figures(run.pair, run.data, settings, state, run.out)
    return summary


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


