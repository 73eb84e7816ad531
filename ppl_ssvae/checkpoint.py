"""Checkpoints: everything a run needs to go on exactly where it stopped.

A checkpoint holds the networks, the optimiser and its scheduler, every random
number generator (torch's global one, which binarisation, Pyro's sampling and
dropout draw from; the dedicated data-order generator; numpy's and Python's),
Pyro's parameters that live outside the networks (TraceGraph's decaying-average
baselines), the metrics history, the best-validation record and, when written in
the middle of an epoch, that epoch's permutation of the data, the position in it
and the running sums. Resuming from it reproduces the uninterrupted run bit for bit
on the CPU. A run of several processes (``ppl_ssvae.distributed``) is resumed with
as many: its checkpoint, written by rank 0, holds every rank's generators and says
how many ranks there were.

It is written atomically (``ppl_ssvae.io``) and read with
``torch.load(weights_only=True)``: tensors and plain Python values only, so a
checkpoint from elsewhere cannot run code. Anything that is not a complete
checkpoint of this format version, written with the same settings, is refused with
a ``CheckpointError`` whose one-line message says what to do.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch

from ppl_ssvae import distributed
from ppl_ssvae.config import Settings
from ppl_ssvae.io import atomic_write

FORMAT = "ppl-ssvae checkpoint"
VERSION = 2
# Settings a resumed run may change: when to stop, where and how to report, what
# to do on a fault. Every other setting decides what is trained and must match.
MAY_CHANGE_ON_RESUME = frozenset({
    "epochs", "max_steps", "on_nan", "progress", "device", "data_dir", "eval_batch_size",
    "checkpoint_every", "figures", "out", "resume", "time_limit", "time_clock",
    "eval_every_seconds", "eval_from_seconds", "stop_at_accuracy",
})


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from; the message says what to do."""


@dataclass
class EpochProgress:
    """How far the current epoch has gone: what a mid-epoch checkpoint adds."""

    order: torch.Tensor  # this epoch's permutation of the unlabelled set
    position: int = 0  # steps of the epoch already taken
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "negative_elbo": 0.0,
                                                "classifier": 0.0})
    skipped: int = 0
    seconds: float = 0.0  # training time spent in this epoch before the checkpoint


@dataclass
class State:
    """What a checkpoint holds besides the networks and the optimiser."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps taken in all
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"valid_accuracy": -1.0})
    skipped: int = 0
    in_epoch: EpochProgress | None = None  # None between epochs
    # training seconds so far, evaluation excluded: the process's CPU time and the wall clock
    clock: dict = field(default_factory=lambda: {"cpu": 0.0, "wall": 0.0})
    evaluations: list[dict] = field(default_factory=list)  # rows of evaluations.jsonl


# --------------------------------------------------------------------------- random state

def rng_state(data_generator: torch.Generator) -> dict:
    """Every generator a step draws from, as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_generator.get_state(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    data_generator.set_state(state["data"].cpu())
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def pyro_side_params() -> dict[str, torch.Tensor]:
    """Parameters in Pyro's store that belong to no network (the ``$$$`` names are
    the networks' own, saved with their state dict): TraceGraph's baselines, say."""
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys() if "$$$" not in name}


def set_pyro_side_params(params: dict[str, torch.Tensor], device: torch.device) -> None:
    store = pyro.get_param_store()
    for name, value in params.items():
        store[name] = value.to(device)  # unconstrained: baselines are real-valued


# --------------------------------------------------------------------------- save and load

def save_checkpoint(path: Path, settings: Settings, pair: torch.nn.Module, optimizer, scheduler,
                    data_generator: torch.Generator, state: State,
                    rank_rngs: list[dict] | None = None) -> None:
    """Write everything a resumed run needs; the old file stays until this one is whole.
    ``rank_rngs``: in a run of several processes, every rank's ``rng_state``, in rank order."""
    in_epoch = None
    if state.in_epoch is not None:
        progress = state.in_epoch
        in_epoch = {"order": progress.order.cpu(), "position": progress.position,
                    "sums": dict(progress.sums), "skipped": progress.skipped,
                    "seconds": progress.seconds}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": settings.model,
        "inference": settings.inference,
        "settings": settings.to_dict(),
        "networks": pair.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "pyro_params": pyro_side_params(),
        "rng": rng_state(data_generator),
        "world_size": len(rank_rngs) if rank_rngs else 1,
        "rank_rngs": rank_rngs if rank_rngs and len(rank_rngs) > 1 else [],
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "best": state.best,
        "skipped": state.skipped,
        "in_epoch": in_epoch,
        "clock": dict(state.clock),
        "evaluations": state.evaluations,
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def write_checkpoint(path: Path, settings: Settings, pair: torch.nn.Module, optimizer, scheduler,
                     data_generator: torch.Generator, state: State) -> None:
    """``save_checkpoint`` as a run of any number of processes writes it: under torchrun
    every rank calls it and hands its generators to rank 0, which writes."""
    rank_rngs = (distributed.gather(rng_state(data_generator)) if distributed.world_size() > 1
                 else None)
    if distributed.is_main():
        save_checkpoint(path, settings, pair, optimizer, scheduler, data_generator, state, rank_rngs)


def _load(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``, or a one-line ``CheckpointError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of odd files
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, random bytes, a pickle of objects
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        if isinstance(e, pickle.UnpicklingError) and named:
            raise CheckpointError(
                f"refusing {path}: it names {named.group(1)}, and a ppl-ssvae checkpoint holds "
                f"only tensors and plain values (loading it could run code); delete it or "
                f"choose another --out") from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({_first_line(e)}): it is truncated or "
            f"corrupt; delete it to start over, or choose another --out") from None
    return payload


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path`` as a dict of tensors and plain values, after checking
    it is a whole ppl-ssvae checkpoint of this version."""
    payload = _load(path)
    if not isinstance(payload, dict) or "version" not in payload:
        raise CheckpointError(f"{path} is not a ppl-ssvae checkpoint: delete it or choose "
                              f"another --out")
    if payload.get("version") != VERSION or payload.get("format", FORMAT) != FORMAT:
        raise CheckpointError(
            f"{path} is a version {payload.get('version')} checkpoint and this ppl-ssvae reads "
            f"version {VERSION}: finish that run with the ppl-ssvae that wrote it, or start "
            f"over in another --out")
    missing = {"settings", "networks", "optimizer", "scheduler", "pyro_params", "rng", "epoch",
               "step", "history", "best", "skipped", "in_epoch"} - set(payload)
    if missing:
        raise CheckpointError(f"{path} is incomplete (no {', '.join(sorted(missing))}): delete "
                              f"it to start over, or choose another --out")
    return payload


def check_same_run(payload: dict, settings: Settings, path: Path) -> None:
    """Refuse to resume a run whose checkpoint was written under other settings that
    decide what is trained (model, inference, networks, data, optimiser ...)."""
    saved = Settings.from_dict(payload["settings"]).to_dict()
    wanted = settings.to_dict()
    differ = [name for name in wanted
              if name not in MAY_CHANGE_ON_RESUME and saved.get(name) != wanted[name]]
    if differ:
        def flags(values):
            return " ".join(f"--{name.replace('_', '-')} {_flag_value(values[name])}"
                            for name in differ)
        raise CheckpointError(
            f"{path} is from another run ({flags(saved)}, not {flags(wanted)}): resume with "
            f"the settings of that run, or choose another --out")


def _first_line(error: Exception, limit: int = 160) -> str:
    """The first line of an error that says something (torch's are many lines long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.endswith(":") and "Weights only" not in line
              and "file an issue" not in line]
    line = (useful or lines or [type(error).__name__])[0].split(". ")[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _flag_value(value) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def load_checkpoint(path: Path, settings: Settings, pair: torch.nn.Module, optimizer, scheduler,
                    data_generator: torch.Generator, payload: dict | None = None,
                    rank: int = 0, world_size: int = 1) -> State:
    """Restore the networks, optimiser, scheduler, Pyro's side parameters and every
    random number generator from ``path`` (or from ``payload``, the checkpoint already
    read from it); return the run's bookkeeping. ``rank`` of ``world_size`` processes
    takes its own generators."""
    payload = payload if payload is not None else read_checkpoint(path)
    check_same_run(payload, settings, path)
    saved_world = payload.get("world_size", 1)
    if saved_world != world_size:
        how = ("without torchrun" if saved_world == 1 else
               f"under torchrun with {saved_world} processes in all (--nproc_per_node x --nnodes)")
        raise CheckpointError(
            f"{path} was written by a run of {saved_world} process(es) and this run has "
            f"{world_size}: resume it {how}, or choose another --out")
    try:
        pair.load_state_dict(payload["networks"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit the networks of --model {settings.model} "
                              f"({_first_line(e)}): it was written by another version of the "
                              f"code; start over in another --out") from None
    set_pyro_side_params(payload["pyro_params"], torch.device(settings.device))
    set_rng_state(payload["rank_rngs"][rank] if world_size > 1 else payload["rng"], data_generator)
    in_epoch = payload["in_epoch"]
    if in_epoch is not None:
        in_epoch = EpochProgress(in_epoch["order"], in_epoch["position"], dict(in_epoch["sums"]),
                                 in_epoch["skipped"], in_epoch["seconds"])
    # checkpoints written before the clock was kept: its wall seconds from the records
    clock = payload.get("clock") or {
        "cpu": 0.0, "wall": sum(row["seconds"] for row in payload["history"])
        + (in_epoch.seconds if in_epoch is not None else 0.0)}
    return State(payload["epoch"], payload["step"], payload["history"], payload["best"],
                 payload["skipped"], in_epoch, dict(clock), payload.get("evaluations", []))


def resume(path: Path, settings: Settings, pair: torch.nn.Module, optimizer, scheduler,
           data_generator: torch.Generator) -> State | None:
    """``--resume``: restore the run from its checkpoint at ``path`` (``load_checkpoint``)
    and return its bookkeeping, or None where no checkpoint was written yet. Under
    torchrun rank 0 reads the file and every rank takes its part of it."""
    payload = distributed.from_main(lambda: read_checkpoint(path) if path.exists() else None)
    if payload is None:
        return None
    return load_checkpoint(path, settings, pair, optimizer, scheduler, data_generator, payload,
                           distributed.rank(), distributed.world_size())


# --------------------------------------------------------------------------- best weights

BEST_FORMAT = "ppl-ssvae best weights"
BEST_FILE = "best.pt"  # in the run directory, beside checkpoint.pt


def save_best(path: Path, settings: Settings, pair: torch.nn.Module, state: State) -> None:
    """The networks at the best validation accuracy so far: the weights behind
    summary.json's ``test_accuracy``. Written (atomically) when an epoch sets a new best."""
    payload = {"format": BEST_FORMAT, "version": VERSION, "settings": settings.to_dict(),
               "networks": pair.state_dict(), "epoch": state.best.get("epoch"),
               "step": state.step, "valid_accuracy": state.best["valid_accuracy"]}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_weights(pair: torch.nn.Module, run_dir: str | Path, which: str = "best") -> dict:
    """Load a run's weights into ``pair``, a pair built with the run's settings
    (``build(Settings.from_dict(json.load(open(RUN/config.json))), K, x_dim)``).

    ``which="best"`` (the default): the best-validation weights of ``RUN/best.pt``,
    the ones ``summary.json``'s ``test_accuracy`` was measured with; a run written
    before ppl-ssvae kept them has no best.pt, and gets the last weights instead.
    ``which="last"``: the last weights, those of ``RUN/checkpoint.pt``.
    Returns ``{"path", "which", "epoch"}``: what was loaded."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir = Path(run_dir)
    best, last = run_dir / BEST_FILE, run_dir / "checkpoint.pt"
    path = best if which == "best" and best.exists() else last
    if not path.exists():
        raise CheckpointError(f"{run_dir} holds no {BEST_FILE} or checkpoint.pt: give the "
                              f"--out directory of a training run")
    payload = _load(path)
    if not isinstance(payload, dict) or "networks" not in payload:
        raise CheckpointError(f"{path} is not a ppl-ssvae checkpoint: give the --out "
                              f"directory of a training run")
    try:
        pair.load_state_dict(payload["networks"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit this pair ({_first_line(e)}): build it "
                              f"with the settings of the run's config.json") from None
    epoch = payload.get("epoch")
    return {"path": str(path), "which": "best" if path == best else "last", "epoch": epoch}

