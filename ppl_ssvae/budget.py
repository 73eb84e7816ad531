"""The time budget of a training run: its training seconds on two clocks (the process's
CPU time and the wall clock; evaluation, checkpoints and logs excluded), the stop at
``--time-limit`` or ``--stop-at-accuracy``, and the validation measurements of ``evaluations.jsonl``, at each
epoch's end and every ``--eval-every-seconds`` within epochs (from ``--eval-from-seconds``
at doubling times until that gap is reached)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from ppl_ssvae import data as data_lib
from ppl_ssvae import distributed, evaluate
from ppl_ssvae.checkpoint import State
from ppl_ssvae.config import Settings
from ppl_ssvae.objective import SSVAE


@contextlib.contextmanager
def timed(clock: dict) -> Iterator[None]:
    """Add the CPU seconds of this process and the wall seconds spent inside to ``clock``."""
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield
    finally:
        clock["cpu"] += time.process_time() - cpu
        clock["wall"] += time.perf_counter() - wall


def over_time_limit(settings: Settings, state: State) -> bool:
    return settings.time_limit is not None and state.clock[settings.time_clock] >= settings.time_limit


def time_is_up(settings: Settings, state: State) -> bool:
    """``over_time_limit`` as every rank sees it: under torchrun rank 0's clock decides,
    so that every rank stops at the same step."""
    return settings.time_limit is not None and distributed.from_main(
        lambda: over_time_limit(settings, state))


def reached_accuracy(settings: Settings, state: State) -> bool:
    """--stop-at-accuracy: the best validation accuracy of a whole epoch has reached it."""
    return (settings.stop_at_accuracy is not None
            and state.best["valid_accuracy"] >= settings.stop_at_accuracy)


def stop_at_accuracy(settings: Settings, state: State) -> bool:
    """``reached_accuracy``, decided between epochs as every rank sees it: rank 0 alone
    evaluates, so its record decides for every rank."""
    return distributed.from_main(lambda: reached_accuracy(settings, state))


def next_evaluation(settings: Settings, last: float) -> float:
    """The training seconds of the measurement after one taken at ``last`` (0: none yet):
    --eval-every-seconds later, or with --eval-from-seconds F sooner early on: at F, then
    at twice the last one's seconds while that is the nearer."""
    later = last + settings.eval_every_seconds
    if settings.eval_from_seconds is None:
        return later
    return min(later, max(settings.eval_from_seconds, 2 * last))


def evaluation_due(settings: Settings, state: State) -> bool:
    """The next measurement's time (``next_evaluation``) has come on --time-clock."""
    if settings.eval_every_seconds is None:
        return False
    key = f"{settings.time_clock}_seconds"
    last = state.evaluations[-1][key] if state.evaluations else 0.0
    return state.clock[settings.time_clock] >= next_evaluation(settings, last)


def record_evaluation(state: State, valid_accuracy: float, epoch: float) -> None:
    state.evaluations.append({"step": state.step, "epoch": epoch, "valid_accuracy": valid_accuracy,
                              "cpu_seconds": state.clock["cpu"], "wall_seconds": state.clock["wall"]})


def evaluate_within_epoch(pair: SSVAE, data: data_lib.Dataset, settings: Settings, state: State,
                          steps_per_epoch: int) -> None:
    """Validation accuracy now, in the middle of an epoch: an evaluations.jsonl row only
    (metrics.jsonl and the best-epoch record stay per epoch). It draws no random numbers,
    so the run goes on exactly as it would have without it."""
    accuracy = evaluate.accuracy(pair, data.valid.x, data.valid.y, settings.eval_batch_size)
    record_evaluation(state, accuracy, state.epoch + state.in_epoch.position / steps_per_epoch)


def budget_summary(settings: Settings, state: State, steps_per_epoch: int,
                   out_of_time: bool, reached: bool = False) -> dict:
    """What the summary says of time: why the run stopped, how far it went, in how long."""
    stopped_by = ("time-limit" if out_of_time else "accuracy" if reached else
                  "max-steps" if state.step < steps_per_epoch * settings.epochs else "epochs")
    return {"stopped_by": stopped_by, "epochs_trained": state.step / steps_per_epoch,
            "time_limit": settings.time_limit, "stop_at_accuracy": settings.stop_at_accuracy,
            "time_clock": settings.time_clock,
            "train_cpu_seconds": state.clock["cpu"], "train_wall_seconds": state.clock["wall"],
            "final_valid_accuracy": (state.evaluations[-1]["valid_accuracy"]
                                     if state.evaluations else None)}
