"""Data-parallel training with two local processes on gloo (``ppl_ssvae.distributed``).

- one step of two ranks, each on its half of a batch, takes the gradient and the
  loss of one process on the whole batch (the model's noise given, so both see the
  same draws); a half alone would not;
- a two-rank ``train --max-steps`` under torchrun leaves both ranks with the same
  parameters, buffers and baselines, and rank 0 alone writes, each output once;
- a rank killed mid-epoch, resumed under torchrun, ends exactly as the
  uninterrupted two-rank run;
- refusals in one line: a batch the ranks cannot share, too few GPUs, a checkpoint
  of another number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.distributions.normal
import torch.multiprocessing as mp

from clitools import FAST, assert_error, one_thread, train_cli  # noqa: F401 (fixture)
from conftest import make_batch, small_pair
from ppl_ssvae import Batch
from ppl_ssvae.cli import main
from ppl_ssvae.data import synthetic
from ppl_ssvae.distributed import shard
from ppl_ssvae.train import take_step

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
TIMING = {"seconds", "examples_per_second", "seconds_per_epoch", "seconds_per_step",
          "train_cpu_seconds", "train_wall_seconds"}
# tracegraph: Pyro's baselines; batch norm: buffers; dropout and binarisation: each
# rank's own noise; checkpoints within the epoch (10 steps an epoch); a partial last epoch
RUN = ["--dataset", "synthetic", "--hidden", "32", "--z-dim", "4", "--batch-size", "200",
       "--labelled-batch-size", "50", "--eval-batch-size", "500", "--epochs", "3",
       "--max-steps", "25", "--checkpoint-every", "4", "--inference", "tracegraph",
       "--batch-norm", "--input-dropout", "0.2", "--lr-decay", "0.9", "--seed", "3",
       "--no-progress"]
OUTPUTS = ["config.json", "metrics.jsonl", "summary.json", "checkpoint.pt",
           "learning_curves.png", "samples.png", "kl_per_dim.png"]


# --------------------------------------------------------------------------- one step

class RecordingSGD(torch.optim.SGD):
    """Plain SGD (Adam would hide a gradient's scale) that keeps the gradients it used."""

    def step(self, closure=None):
        self.grads = [p.grad.clone() for group in self.param_groups for p in group["params"]]
        return super().step(closure)


def one_step(share=shard) -> dict:
    """One training step of a small M2 on a fixed batch, or on this rank's share of it,
    with the guide's Gaussian noise taken from fixed tensors (this rank's share).
    ``share`` picks the examples, along the first dimension."""
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair, settings = small_pair(inference="enum")
    whole = make_batch(synthetic(seed=0), b_u=8, b_l=6)
    batch = Batch(x_u=share(whole.x_u), x_l=share(whole.x_l), y_l=share(whole.y_l),
                  n_u=whole.n_u, n_l=whole.n_l, idx_u=share(whole.idx_u),
                  idx_l=share(whole.idx_l))
    g = torch.Generator().manual_seed(1)
    # the guide draws z for the unlabelled images (one per enumerated class), then the
    # labelled ones; the images are along dimension -2
    noise = [torch.randn(10, 8, 4, generator=g), torch.randn(6, 4, generator=g)]

    def given_noise(shape, dtype, device):
        drawn = share(noise.pop(0).movedim(-2, 0)).movedim(0, -2)
        assert drawn.shape == shape, (drawn.shape, shape)
        return drawn.to(dtype=dtype, device=device)

    draw = torch.distributions.normal._standard_normal
    torch.distributions.normal._standard_normal = given_noise
    try:
        optimizer = RecordingSGD(pair.parameters(), lr=1e-4)
        terms, fault = take_step(pair, optimizer, batch, 0, settings)
    finally:
        torch.distributions.normal._standard_normal = draw
    assert fault is None and not noise, "every noise tensor is drawn, once"
    return {"grads": optimizer.grads, "terms": terms,
            "params": [p.detach().clone() for p in pair.parameters()],
            "uneven": shard(torch.arange(5), wrap=torch.arange(100, 110))}


def step_worker(rank: int, world: int, port: int, record: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(one_step(), Path(record) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])
    return float((flat(a) - flat(b)).norm() / flat(b).norm())


def test_two_ranks_on_halves_step_as_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(step_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    whole = one_step()  # one process: the whole batch, the whole noise

    for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(a, b)  # one averaged gradient, one update everywhere
    assert relative_error(ranks[0]["grads"], whole["grads"]) < 1e-5
    assert relative_error(ranks[0]["params"], whole["params"]) < 1e-6
    for key in ("loss", "negative_elbo", "classifier"):
        assert ranks[0]["terms"][key] == pytest.approx(whole["terms"][key], rel=1e-5)

    # the check has teeth: rank 0's half alone, not averaged, has another gradient
    half = one_step(share=lambda t: t[:len(t) // 2])
    assert relative_error(half["grads"], whole["grads"]) > 0.05

    # an uneven batch is filled up from the permutation: equal shares, the union covers it
    assert ranks[0]["uneven"].tolist() == [0, 1, 2] and ranks[1]["uneven"].tolist() == [3, 4, 100]


# --------------------------------------------------------------------------- torchrun

def torchrun(record: Path, out: Path, *extra: str, stall: tuple[int, int] | None = None,
             wait: bool = True):
    record.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "--monitor-interval", "0.2",
               str(HERE / "torchrun_worker.py"), str(record), *map(str, stall or ()), "--",
               *RUN, "--out", str(out), *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=ENV)
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def results(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING}
    return [drop(row) for row in rows], drop(summary)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """An uninterrupted two-rank run: (its --out, its record, the torchrun result)."""
    root = tmp_path_factory.mktemp("two-ranks")
    done = torchrun(root / "record", root / "run")
    return root / "run", root / "record", done


def test_two_ranks_end_with_the_same_state(two_ranks):
    _, record, _ = two_ranks
    states = [torch.load(record / f"state-rank{r}.pt") for r in range(2)]
    assert states[0]["pyro"], "tracegraph keeps its baselines in Pyro's store"
    for part in ("networks", "pyro"):
        assert states[0][part].keys() == states[1][part].keys()
        for name, value in states[0][part].items():
            assert torch.equal(value, states[1][part][name]), name


def test_rank_zero_alone_writes_every_output_once(two_ranks):
    out, record, done = two_ranks
    assert not (record / "writes-rank1.txt").exists(), "rank 1 wrote something"
    writes = (record / "writes-rank0.txt").read_text().splitlines()
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    counts = {name: writes.count(str((out / name).resolve())) for name in OUTPUTS}
    for name in ("config.json", "summary.json", "learning_curves.png", "samples.png",
                 "kl_per_dim.png"):
        assert counts[name] == 1, (name, counts)
    # metrics.jsonl: the start and every epoch's end; the checkpoint: every 4 steps and
    # at every epoch's end (steps 4 8 10 12 16 20 24 25)
    assert counts["metrics.jsonl"] == 1 + 3 and counts["checkpoint.pt"] == 8, counts
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 25
    assert done.stdout.count('"world_size": 2') == 1, "the summary is printed once"
    rows, _ = results(out)
    assert [row["step"] for row in rows] == [10, 20, 25]


def test_a_killed_rank_resumes_to_the_uninterrupted_result(two_ranks, tmp_path):
    out = tmp_path / "run"
    record = tmp_path / "record"
    # rank 1 stalls before its 7th step and is killed; torchrun stops rank 0; the
    # last checkpoint is step 4's
    process = torchrun(record, out, stall=(1, 7), wait=False)
    marker = record / "stalled"
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() or not marker.read_text().strip():
            if process.poll() is not None:
                pytest.fail(f"the run ended before stalling: {process.stderr.read().decode()}")
            assert time.monotonic() < deadline, "the run never reached the stall point"
            time.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode != 0
    assert not (out / "summary.json").exists()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (saved["step"], saved["world_size"], len(saved["rank_rngs"])) == (4, 2, 2)

    torchrun(tmp_path / "record-resumed", out, "--resume")
    assert results(out) == results(two_ranks[0])


# --------------------------------------------------------------------------- refusals

def launched_as(monkeypatch, world: int) -> None:
    """This process, as rank 0 of ``world`` that torchrun started on one machine."""
    for name, value in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", world),
                        ("LOCAL_WORLD_SIZE", world)):
        monkeypatch.setenv(name, str(value))


def test_a_batch_the_ranks_cannot_share_is_refused(capsys, monkeypatch, tmp_path):
    launched_as(monkeypatch, 3)
    code, err = train_cli(capsys, "--out", str(tmp_path))
    assert_error(code, err, "--batch-size 200 is the batch of a step over all 3 processes",
                 "use --batch-size 201")
    code, err = train_cli(capsys, "--batch-size", "201", "--out", str(tmp_path))
    assert_error(code, err, "--labelled-batch-size 50", "use --labelled-batch-size 51")


def test_fewer_gpus_than_local_ranks_is_refused(capsys, monkeypatch, tmp_path):
    launched_as(monkeypatch, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = train_cli(capsys, "--device", "cuda", "--out", str(tmp_path))
    assert_error(code, err, "--device cuda with 2 processes on this machine, but it has 1 GPU",
                 "--nproc_per_node 1")


def test_a_checkpoint_of_another_world_size_is_refused(capsys, two_ranks, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_ranks[0], out)
    code = main(["train", *RUN, "--resume", "--out", str(out)])
    assert_error(code, capsys.readouterr().err,
                 "was written by a run of 2 process(es) and this run has 1",
                 "resume it under torchrun with 2 processes in all")


def test_help_says_the_batch_is_global(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "unlabelled examples per step, in all: under torchrun the global batch" in text
    assert "global under torchrun" in text


@pytest.mark.parametrize("method", ["unordered-set", "gumbel-rao"])
def test_the_new_estimators_train_under_torchrun(tmp_path, method):
    """A label estimator (its labels drawn per rank) and Gumbel-Rao (its noise drawn per
    rank) step as one model: both ranks end with the same state."""
    record = tmp_path / "record"
    torchrun(record, tmp_path / "run", "--inference", method, "--samples", "3",
             "--max-steps", "6")
    states = [torch.load(record / f"state-rank{r}.pt") for r in range(2)]
    for name, value in states[0]["networks"].items():
        assert torch.equal(value, states[1]["networks"][name]), name
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["inference"] == method
