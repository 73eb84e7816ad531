"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``::

    torchrun --nproc_per_node 2 -m ppl_ssvae train --model m2 --inference enum ...

One process (no torchrun, or a world of one) is the default, and nothing here
touches it: every function below is then the identity or does nothing, so such a
run is the same, bit for bit, as before this module existed.

Under torchrun every rank runs the same loop. ``--batch-size`` and
``--labelled-batch-size`` are the global batch of a step: each rank takes an equal,
disjoint share of the step's slice of the epoch's permutation (drawn alike on every
rank from the shared data generator) and of its labelled draws, so the union of the
shares is the batch a single process would take. The plates scale each share to the
whole data set, so every rank's gradient, and their average, is an unbiased estimate
of the gradient of the same full-data objective; with equal shares the average is
exactly the gradient of the global batch.

One collective per step (``average_gradients``) averages, in one flat buffer, the
gradients, the floating-point buffers (batch-norm statistics), Pyro's parameters
that belong to no network (the running-average baselines of ``tracegraph``) and the
loss terms: after every step every rank holds the same state, and a non-finite term
on one rank stops or skips the step on all of them. Rank 0 alone writes, evaluates
and reports; the others get its results through ``from_main``.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pyro
import torch
import torch.distributed as dist

T = TypeVar("T")
TERMS = ("loss", "negative_elbo", "classifier")  # the loss terms a step reports
# rank 0 evaluates alone while the others wait in their next collective
TIMEOUT = datetime.timedelta(minutes=60)


class DistributedError(Exception):
    """A launch that cannot train; the message says what to do."""


def launched() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) as torchrun set them, or as the
    process group says if one is already up; (0, 1, 0, 1) for a plain process."""
    env = os.environ
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        return (dist.get_rank(), world, int(env.get("LOCAL_RANK", dist.get_rank())),
                int(env.get("LOCAL_WORLD_SIZE", world)))
    world = int(env.get("WORLD_SIZE", 1))
    return (int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", world)))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, or a plain process: the one that writes, evaluates and reports."""
    return launched()[0] == 0


def check(settings, world: int, local_world: int) -> None:
    """Refuse a launch that cannot train, in one line, before any process group exists."""
    for flag, size in (("--batch-size", settings.batch_size),
                       ("--labelled-batch-size", settings.labelled_batch_size)):
        if size % world:
            multiple = math.ceil(size / world) * world
            raise DistributedError(
                f"{flag} {size} is the batch of a step over all {world} processes and must be "
                f"a multiple of their number: use {flag} {multiple}, or another process count")
    if settings.device.startswith("cuda"):
        if settings.device != "cuda":
            raise DistributedError(
                f"--device {settings.device} names one GPU, and each of the {world} processes "
                f"takes the GPU of its local rank: use --device cuda")
        gpus = torch.cuda.device_count()
        if gpus < local_world:
            raise DistributedError(
                f"--device cuda with {local_world} processes on this machine, but it has "
                f"{gpus} GPU(s): use --nproc_per_node {gpus} or fewer")


@contextlib.contextmanager
def process_group(settings) -> Iterator[torch.device]:
    """The device this process trains on, with torch.distributed's process group up
    while inside (gloo on the CPU, NCCL on CUDA, one GPU per local rank) when torchrun
    started several; a plain process gets ``settings.device`` and no group. A group
    the caller set up is used as it is and left up."""
    _, world, local_rank, local_world = launched()
    if world == 1:
        yield torch.device(settings.device)
        return
    check(settings, world, local_world)
    cuda = settings.device.startswith("cuda")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owner = not dist.is_initialized()
    if owner:  # torchrun's environment says where the others are (env://)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield device
    finally:
        if owner:
            dist.destroy_process_group()


def seed_rank(seed: int) -> None:
    """Give ranks other than 0 their own stream of the global generators (binarisation,
    the model's noise, dropout), derived from ``seed`` and the rank; rank 0 keeps the
    stream of a single process. Called after the networks are built, so their
    initial values are alike everywhere anyway (and broadcast)."""
    if rank() > 0:
        pyro.set_rng_seed(int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0]))


def shard(indices: torch.Tensor, wrap: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's equal share of ``indices``, the step's global batch. When the batch
    does not split evenly (an epoch's last, shorter batch) it is first filled up from
    ``wrap``'s start (the epoch's permutation: positions other than the batch's own), so
    every rank's share has the same size and their union covers the batch."""
    world = world_size()
    if world == 1:
        return indices
    share = math.ceil(len(indices) / world)
    short = share * world - len(indices)
    if short:
        filler = wrap if wrap is not None else indices
        indices = torch.cat([indices, filler[:short].to(indices.device)])
    return indices[rank() * share:(rank() + 1) * share]


def _side_params() -> list[tuple[str, torch.Tensor]]:
    """Pyro's parameters that belong to no network (``$$$`` names are the networks'
    own): TraceGraph's running-average baselines. Sorted, so every rank lays them out
    alike."""
    store = pyro.get_param_store()
    return [(name, store[name].detach()) for name in sorted(store.keys()) if "$$$" not in name]


def _float_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    return [b for b in module.buffers() if b.is_floating_point()]


def average_gradients(module: torch.nn.Module, terms: dict | None) -> dict | None:
    """Average, over the ranks, in one all-reduce of one flat buffer: the gradients
    of ``module``'s parameters (one that has none on any rank keeps none), its
    floating-point buffers, Pyro's side parameters and the loss ``terms`` (``None``
    where this rank's loss failed: it counts as not finite). Return the averaged
    terms; in one process, ``terms`` as they are."""
    world = world_size()
    if world == 1:
        return terms
    params = [p for p in module.parameters() if p.requires_grad]
    buffers = _float_buffers(module)
    side = _side_params()
    device = params[0].device
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=device)
    values = [float(terms[key]) if terms is not None else math.nan for key in TERMS]
    pieces = ([p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
              + buffers + [value for _, value in side])
    flat = torch.cat([t.reshape(-1).float() for t in pieces]
                     + [has_grad, torch.tensor(values, device=device)])
    dist.all_reduce(flat)
    flat /= world
    chunks = iter(flat.split([t.numel() for t in pieces] + [len(params), len(TERMS)]))
    with torch.no_grad():
        grads = [next(chunks) for _ in params]
        for b in buffers:
            b.copy_(next(chunks).view_as(b))
        store = pyro.get_param_store()
        for name, value in side:
            store[name] = next(chunks).view_as(value).to(value.dtype).clone()
        any_grad = next(chunks)
        for p, grad, had in zip(params, grads, any_grad.tolist(), strict=True):
            if had > 0:
                p.grad = grad.view_as(p).to(p.dtype)  # a view of the buffer, no copy
    return dict(zip(TERMS, next(chunks).tolist(), strict=True))


def broadcast_state(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters, floating-point buffers and Pyro side
    parameters, in one broadcast: at the start and after a resume."""
    if world_size() == 1:
        return
    params = [p.detach() for p in module.parameters()] + _float_buffers(module)
    side = _side_params()
    pieces = params + [value for _, value in side]
    flat = torch.cat([t.reshape(-1).float() for t in pieces])
    dist.broadcast(flat, src=0)
    chunks = iter(flat.split([t.numel() for t in pieces]))
    store = pyro.get_param_store()
    with torch.no_grad():
        for t in params:
            t.copy_(next(chunks).view_as(t))
        for name, value in side:
            store[name] = next(chunks).view_as(value).to(value.dtype).clone()


def from_main(make: Callable[[], T]) -> T:
    """``make()``, run on rank 0 alone and its result handed to every rank; an exception
    it raises is raised on every rank, so all of them stop with rank 0's message."""
    if world_size() == 1:
        return make()
    box: list[Any] = [None]
    if rank() == 0:
        try:
            box[0] = (make(), None)
        except Exception as e:  # noqa: BLE001 - handed to every rank, raised there
            box[0] = (None, e)
    dist.broadcast_object_list(box, src=0)
    value, error = box[0]
    if error is not None:
        raise error
    return value


@contextlib.contextmanager
def entered_on_main(make: Callable[[], contextlib.AbstractContextManager[T]]) -> Iterator[T]:
    """``with make() as value`` on rank 0 alone, for as long as inside (the run directory,
    held and locked by the rank that writes); every rank gets the value, or rank 0's error."""
    with contextlib.ExitStack() as stack:
        yield from_main(lambda: stack.enter_context(make()))


def gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank; ``[value]`` in one process."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values
