"""``ppl-ssvae bench``: how long one training step takes, against plain PyTorch and as K grows.

Everything is measured in one process; each number is the median of repeats after
warm-up steps, and the configurations of a table take their steps in turn, round
after round (in a shuffled order), so a load that comes and goes on a shared
machine hits them alike:

1. ``step``: one training step (100 unlabelled + 100 labelled images indexed out of
   tensors in memory and binarised, the loss, its gradients, one Adam update) for
   every model x inference pair in ``registry.MODELS``, K = 10;
2. ``plain-torch-m2``: the same exact-M2 step without Pyro, ``reference.m2_negative_elbo``
   (the closed-form sum over y) plus the classifier term on the same networks, one
   ``backward()``, the same Adam; each step row gives its ratio to it;
3. ``scaling``: the step for K in {10, 30, 100, 300} classes (synthetic data of MNIST's
   shape) for enum, gumbel, st-gumbel and score; a table and a log-log figure. Its
   K = 10 row repeats the step table's rows, the same configurations. At each K, section
   ``hierarchical`` times the hierarchical model (exact sum and gumbel-cat-kl) beside
   M2's gumbel-cat-kl step, taking turns with it;
4. ``two-digit``: the step on real images with K = 100, two-digit MNIST (1,568 pixels),
   for the methods of the time-budget comparison (``experiments/timebudget.py``): the
   scaling table's K = 100 row, on the data it is about (skipped by ``--quick``, and
   with a line saying so where MNIST cannot be found);
5. ``memory``: the peak resident set size of ``ppl-ssvae train --epochs 1`` on MNIST,
   run as a child process (skipped by ``--quick``).

The networks are fixed whatever the training defaults become: one hidden layer of
500 softplus units in every network, z of 50 dimensions, no batch norm or dropout.
Torch runs on one thread unless ``--threads`` says otherwise: on a 2-core machine
shared with other jobs, two threads per process oversubscribe the cores and the
timings vary several-fold, while one thread measures the work a step does. The tables,
the figure and the files of ``--out`` are ``ppl_ssvae.bench_report``'s.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from ppl_ssvae import data as data_lib
from ppl_ssvae.bench_report import (
    HIERARCHICAL,
    PLAIN,
    SCALING_INFERENCES,
    format_report,
    ratio,
    write_outputs,
)
from ppl_ssvae.config import Settings
from ppl_ssvae.registry import MODELS, build
from ppl_ssvae.step import adam, draw_batch

NETWORKS = dict(hidden=(500,), activation="softplus", z_dim=50, batch_norm=False, input_dropout=0.0)
SCALING_K = (10, 30, 100, 300)
JIT_INFERENCES = ("enum", "gumbel")  # JitTraceEnum_ELBO, JitTrace_ELBO
TRAIN_SIZE = 2000  # synthetic images to draw batches from; the step does not depend on it
TWO_DIGIT = (("m2", "enum"), ("m2", "gumbel-cat-kl"), ("m2", "st-gumbel-cat-kl"),
             ("m2", "tracegraph"), ("mlp", "ml"), ("two-digit", "enum"),
             ("two-digit", "gumbel-cat-kl"), ("two-digit-mlp", "ml"), ("hierarchical", "enum"),
             ("hierarchical", "gumbel-cat-kl"))


@dataclass
class Plan:
    """What to measure and how often."""

    warmup: int = 5
    repeats: int = 30
    seconds_per_case: float = 20.0  # fewer repeats for a case whose steps take longer
    scaling_k: tuple[int, ...] = SCALING_K
    quick: bool = False
    device: str = "cpu"
    memory: bool = True
    two_digit: bool = True
    data_dir: str | None = None

    @classmethod
    def quick_plan(cls, **changes) -> Plan:
        return cls(**{**dict(warmup=1, repeats=2, seconds_per_case=2.0, scaling_k=(10, 30),
                             quick=True, memory=False, two_digit=False), **changes})


@dataclass
class Case:
    """One configuration: a step function and the times it took."""

    section: str
    model: str
    inference: str
    classes: int
    step: Callable[[int], None] | None
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    repeats: int = 0
    error: str | None = None


def bench_settings(model: str, inference: str, device: str = "cpu") -> Settings:
    return Settings(model=model, inference=inference, dataset="synthetic", progress=False,
                    device=device, **NETWORKS)


def bench_data(num_classes: int, device: str) -> tuple[data_lib.Dataset, torch.Tensor]:
    """MNIST-shaped synthetic images with ``num_classes`` classes, and the indices of
    a labelled subset (every other image) to draw labelled batches from."""
    data = data_lib.synthetic(TRAIN_SIZE, 10, 10, num_classes=num_classes, seed=0).to(device)
    return data, torch.arange(0, TRAIN_SIZE, 2)


def plain_m2_loss(pair, batch, step: int = 0) -> torch.Tensor:
    """M2's objective without Pyro: the hand-written closed-form ELBO plus the classifier term."""
    from ppl_ssvae.reference import m2_negative_elbo

    return m2_negative_elbo(pair.model, pair.guide, batch) + pair.classifier_loss(batch, step)


def _batches(data, labelled, settings):
    """``batch(i)``: the i-th training batch, as the training loop draws it."""
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=g)
    per_epoch = len(data.train) // settings.batch_size
    return lambda i: draw_batch(data, labelled, settings, order, i % per_epoch, g)


def make_case(section: str, model: str, inference: str, data, labelled, device: str,
              jit: bool = False) -> Case:
    """A training step of ``model`` with ``inference`` (or of the plain-PyTorch M2),
    its ELBO compiled by Pyro's JIT if ``jit`` (``--jit``; the row's inference reads
    "enum --jit")."""
    plain = model == PLAIN
    settings = bench_settings("m2" if plain else model, "enum" if plain else inference, device)
    settings = settings.replace(jit=jit)
    case = Case(section, model, "exact" if plain else inference + (" --jit" if jit else ""),
                data.num_classes, None)
    try:
        pair = build(settings, data.num_classes, data.train.x.shape[1]).to(device)
    except Exception as e:  # a model another branch registers may not build yet
        case.error = f"{type(e).__name__}: {e}"
        return case
    optimizer = adam(pair.parameters(), settings.lr)
    batch = _batches(data, labelled, settings)

    def pyro_step(i: int) -> None:
        pair.loss_and_grads(batch(i), i)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain_step(i: int) -> None:
        plain_m2_loss(pair, batch(i), i).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    case.step = plain_step if plain else pyro_step
    return case


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_interleaved(cases: list[Case], plan: Plan, log: Callable[[str], None]) -> None:
    """Warm every case up, then time them round by round, in a shuffled order, until
    each has its repeats."""
    live = [c for c in cases if c.step is not None]
    for case in live:
        try:
            started = time.perf_counter()
            for i in range(plan.warmup):
                case.step(i)
            _sync(plan.device)
            per_step = (time.perf_counter() - started) / max(1, plan.warmup)
        except Exception as e:
            case.error, case.step = f"{type(e).__name__}: {e}", None
            log(f"  {case.model}/{case.inference} K={case.classes}: failed: {case.error}")
            continue
        affordable = int(plan.seconds_per_case / max(per_step, 1e-9))
        case.repeats = max(min(3, plan.repeats), min(plan.repeats, affordable))
    live = [c for c in live if c.step is not None]
    i, shuffle = plan.warmup, random.Random(0).shuffle
    while any(len(c.wall) < c.repeats for c in live):
        shuffle(live)  # a new order each round: no case always runs after the same neighbour
        for case in live:
            if len(case.wall) >= case.repeats:
                continue
            _sync(plan.device)
            wall, cpu = time.perf_counter(), time.process_time()
            case.step(i)
            _sync(plan.device)
            case.wall.append(time.perf_counter() - wall)
            case.cpu.append(time.process_time() - cpu)
        i += 1


def row(case: Case, examples_per_step: int = 200) -> dict:
    ms = statistics.median(case.wall) * 1000 if case.wall else None
    out = {"section": case.section, "model": case.model, "inference": case.inference,
           "classes": case.classes, "step_ms": ms,
           "examples_per_s": examples_per_step / ms * 1000 if ms else None,
           "cpu_ms": statistics.median(case.cpu) * 1000 if case.cpu else None,
           "repeats": len(case.wall)}
    if case.error:
        out["error"] = case.error
    return out


def step_cases(plan: Plan, data, labelled) -> list[Case]:
    cases = [make_case("step", PLAIN, "exact", data, labelled, plan.device)]
    for name, spec in MODELS.items():
        if spec.classes not in (None, data.num_classes):
            continue  # a model of 100 classes (two-digit) is timed in the two-digit section
        inferences = spec.inferences
        if plan.quick:  # each model's default, and the two the targets compare
            inferences = [i for i in inferences if i == inferences[0] or
                          (name == "m2" and i in ("enum", "gumbel"))]
        cases += [make_case("step", name, inference, data, labelled, plan.device)
                  for inference in inferences]
    # Pyro's JIT ELBOs (--jit): does compiling the ELBO change the step time?
    cases += [make_case("step", "m2", inference, data, labelled, plan.device, jit=True)
              for inference in JIT_INFERENCES]
    return cases


def run(plan: Plan, log: Callable[[str], None] = lambda message: None) -> list[dict]:
    """Every measurement of the benchmark, one dict per row."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    rows: list[dict] = []
    memory = None
    if plan.memory:  # first: a child's ru_maxrss counts the RSS of its parent at the spawn
        # (Linux keeps the high-water mark across exec), so it is measured while this
        # process is small; run last, it read 2,161 MiB for an epoch that peaks at 867
        log("peak memory of one MNIST epoch (ppl-ssvae train --epochs 1) ...")
        memory = memory_row(plan)
    data, labelled = bench_data(10, plan.device)
    log("one training step, every model x inference, K = 10 ...")
    cases = step_cases(plan, data, labelled)
    run_interleaved(cases, plan, log)
    step_rows = [row(c) for c in cases]
    plain_ms = step_rows[0]["step_ms"]
    for r in step_rows:
        r["vs_plain"] = r["step_ms"] / plain_ms if r["step_ms"] and plain_ms else None
    rows += step_rows
    measured = {r["inference"]: r for r in step_rows if r["model"] == "m2" and r["step_ms"]}
    for k in plan.scaling_k:
        if k == 10 and all(i in measured for i in SCALING_INFERENCES):
            # the same configurations the step table timed: one number for each, not two
            scaling_rows = [{**measured[i], "section": "scaling"} for i in SCALING_INFERENCES]
            for r in scaling_rows:
                r.pop("vs_plain", None)
        else:
            log(f"scaling in K: K = {k} ...")
            data, labelled = bench_data(k, plan.device)
            cases = [make_case("scaling", "m2", inference, data, labelled, plan.device)
                     for inference in SCALING_INFERENCES]
            run_interleaved(cases, plan, log)
            scaling_rows = [row(c) for c in cases]
            del data, cases
        enum_ms = scaling_rows[0]["step_ms"]
        for r in scaling_rows:
            r["speedup_vs_enum"] = enum_ms / r["step_ms"] if r["step_ms"] and enum_ms else None
        rows += scaling_rows
        rows += hierarchical_rows(k, plan, log)
    if plan.two_digit:
        log("one training step on two-digit MNIST, 1,568 pixels, K = 100 ...")
        rows += two_digit_rows(plan, log)
    if memory is not None:
        rows.append(memory)
    context = {"threads": torch.get_num_threads(), "device": plan.device,
               "torch": torch.__version__, "pyro": pyro.__version__,
               "warmup": plan.warmup, "quick": plan.quick}
    return [{**r, **context} for r in rows]


def hierarchical_rows(k: int, plan: Plan, log: Callable[[str], None]) -> list[dict]:
    """The hierarchical model's step (exact sum and relaxed) beside M2's relaxed step at
    K classes, synthetic data of MNIST's shape: section ``hierarchical``."""
    log(f"hierarchical model against M2's relaxed step: K = {k} ...")
    data, labelled = bench_data(k, plan.device)
    cases = [make_case("hierarchical", model, inference, data, labelled, plan.device)
             for model, inference in HIERARCHICAL]
    run_interleaved(cases, plan, log)
    rows = [row(c) for c in cases]
    relaxed = rows[0]
    for r in rows:
        r["vs_m2_gumbel_cat_kl"] = ratio(r, relaxed)
    return rows


def two_digit_rows(plan: Plan, log: Callable[[str], None]) -> list[dict]:
    """The step of each method in ``TWO_DIGIT`` on two-digit MNIST with 1,000 labels; one
    row with the reason if the data cannot be loaded."""
    try:
        data = data_lib.load("two-digit-mnist", plan.data_dir).to(plan.device)
    except data_lib.DataError as e:
        log(f"  skipped: {e}")
        return [{"section": "two-digit", "model": "-", "inference": "-", "classes": 100,
                 "step_ms": None, "examples_per_s": None, "error": str(e), "skipped": True}]
    labelled = data_lib.balanced_labels(data.train.y, 1000, data.num_classes, seed=0)
    cases = [make_case("two-digit", model, inference, data, labelled, plan.device)
             for model, inference in TWO_DIGIT]
    run_interleaved(cases, plan, log)
    rows = [row(c) for c in cases]
    enum = rows[0]
    for r in rows:
        r["x_dim"] = data.x_dim
        r["speedup_vs_enum"] = enum["step_ms"] / r["step_ms"] if r["step_ms"] else None
        r["cpu_speedup_vs_enum"] = enum["cpu_ms"] / r["cpu_ms"] if r["cpu_ms"] else None
    return rows


def memory_row(plan: Plan) -> dict:
    """Train m2/enum for one MNIST epoch in a child process; its peak RSS from wait4."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "ppl_ssvae", "train", "--model", "m2", "--inference", "enum",
               "--epochs", "1", "--hidden", "500", "--activation", "softplus", "--z-dim", "50",
               "--no-batch-norm", "--input-dropout", "0", "--seed", "0", "--no-progress",
               "--device", plan.device]
        if plan.data_dir:
            cmd += ["--data-dir", plan.data_dir]
        result = {"section": "memory", "model": "m2", "inference": "enum", "classes": 10,
                  "step_ms": None, "examples_per_s": None,
                  "command": " ".join(["ppl-ssvae", *cmd[3:], "--out", "TMPDIR"])}
        cmd += ["--out", out]
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # as --threads says
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
        if proc.returncode != 0:
            result["error"] = (stderr.strip().splitlines() or ["no message"])[-1]
            return result
        summary = json.loads((Path(out) / "summary.json").read_text())
    per_kb = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    result["peak_rss_mb"] = usage.ru_maxrss * per_kb / 2**20
    result["seconds_per_epoch"] = summary["seconds_per_epoch"]
    result["examples_per_s"] = summary["examples_per_second"]
    result["step_ms"] = summary["seconds_per_epoch"] / summary["steps"] * 1000
    return result


def main(args) -> int:
    """``ppl-ssvae bench``; raises ``SettingsError`` for bad options."""
    from ppl_ssvae.config import SettingsError, check_device
    from ppl_ssvae.io import prepare_output_dir

    for name in ("repeats", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise SettingsError(f"--{name} must be {'>= 0' if name == 'warmup' else 'positive'}, "
                                f"got {value}")
    out = args.out  # files only where --out says; otherwise the tables are printed
    check_device(args.device)
    if out:  # before the timing: a target that cannot be written is refused at once
        prepare_output_dir(out)
    torch.set_num_threads(args.threads)
    changes = {k: getattr(args, k) for k in ("repeats", "warmup") if getattr(args, k) is not None}
    changes.update(device=args.device, data_dir=args.data_dir)
    if args.no_memory:
        changes["memory"] = False
    if args.no_two_digit:
        changes["two_digit"] = False
    plan = Plan.quick_plan(**changes) if args.quick else Plan(**changes)
    started = time.perf_counter()
    rows = run(plan, log=lambda message: print(message, file=sys.stderr, flush=True))
    if out:
        write_outputs(rows, out)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_report(rows))
        print(f"{time.perf_counter() - started:.0f} s on {platform.processor() or platform.machine()}"
              + (f"; written to {out}/" if out else ""))
    return 0
