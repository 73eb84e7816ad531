"""The benchmark runs and reports what it promises; its plain-PyTorch step computes
the same objective as the Pyro step; the fast pixel likelihood is Pyro's Bernoulli."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_ssvae import bench, build
from ppl_ssvae.cli import main
from ppl_ssvae.distributions import BernoulliImage
from ppl_ssvae.train import draw_batch

REQUIRED = {"model", "inference", "classes", "step_ms", "examples_per_s"}


@pytest.fixture
def one_thread():
    """The benchmark sets torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_bench_prints_json_rows_and_writes_its_files(capsys, tmp_path, one_thread):
    assert main(["bench", "--quick", "--json", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert REQUIRED <= row.keys(), row
    timed = [r for r in rows if not r.get("error")]
    assert all(r["step_ms"] > 0 and r["examples_per_s"] > 0 for r in timed)
    for r in timed:  # 200 images per step
        assert r["examples_per_s"] == pytest.approx(200 / r["step_ms"] * 1000)
    plain = [r for r in rows if r["model"] == "plain-torch-m2"]
    assert len(plain) == 1 and plain[0]["classes"] == 10 and plain[0]["vs_plain"] == 1.0
    pairs = {(r["model"], r["inference"]) for r in rows if r["section"] == "step"}
    assert {("m2", "enum"), ("m2", "gumbel")} <= pairs
    scaling = {(r["inference"], r["classes"]) for r in rows if r["section"] == "scaling"}
    assert {(i, k) for i in bench.SCALING_INFERENCES for k in (10, 30)} <= scaling
    hierarchical = {(r["model"], r["inference"], r["classes"]) for r in rows
                    if r["section"] == "hierarchical"}
    assert {(m, i, k) for m, i in bench.HIERARCHICAL for k in (10, 30)} <= hierarchical
    assert not any(r["section"] == "memory" for r in rows)  # --quick skips the epoch run
    assert json.loads((tmp_path / "bench.json").read_text()) == rows
    assert "| m2 | enum | 10 |" in (tmp_path / "bench.md").read_text()
    assert "hierarchical/enum / m2/gumbel-cat-kl" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "scaling_in_k.png").stat().st_size > 0


def test_bad_bench_options_are_one_line_errors(capsys):
    assert main(["bench", "--quick", "--repeats", "0"]) == 2
    assert "--repeats must be positive" in capsys.readouterr().err


def test_plain_step_is_the_pyro_step_on_the_same_draws():
    """Same networks, same batch, same z noise: the same loss and the same gradients."""
    settings = bench.bench_settings("m2", "enum")
    pair = build(settings, 10, 784)
    data, labelled = bench.bench_data(10, "cpu")
    g = torch.Generator().manual_seed(3)
    batch = draw_batch(data, labelled, settings, torch.randperm(len(data.train), generator=g), 0, g)
    pyro.set_rng_seed(11)
    terms = pair.loss_and_grads(batch, step=0)
    by_pyro = [p.grad.clone() for p in pair.parameters()]
    pair.zero_grad()
    pyro.set_rng_seed(11)
    plain = bench.plain_m2_loss(pair, batch, step=0)
    plain.backward()
    assert float(plain.detach()) / batch.size == pytest.approx(terms["loss"], rel=1e-5)
    for g_pyro, p in zip(by_pyro, pair.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(g_pyro, p.grad, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_image_is_pyros_bernoulli_over_pixels(grey):
    logits = torch.randn(3, 5, 7)
    x = torch.rand(5, 7) if grey else (torch.rand(5, 7) < 0.5).float()
    stock = dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
    ours = BernoulliImage(logits)
    assert ours.batch_shape == stock.batch_shape and ours.event_shape == stock.event_shape
    torch.testing.assert_close(ours.log_prob(x), stock.log_prob(x))
    expanded = BernoulliImage(logits[:1]).expand((4, 3, 5))
    assert expanded.batch_shape == (4, 3, 5)
    torch.testing.assert_close(expanded.log_prob(x)[2, 1], stock.log_prob(x)[0])
    samples = ours.sample((1000,))
    assert samples.shape == (1000, 3, 5, 7) and set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(samples.mean(0), ours.mean, atol=0.06, rtol=0)


def test_the_step_on_two_digit_mnist_is_timed_for_each_method(one_thread):
    torch.set_num_threads(1)
    plan = bench.Plan(warmup=1, repeats=2, seconds_per_case=0.5, memory=False)
    rows = bench.two_digit_rows(plan, log=lambda message: None)
    assert [(r["model"], r["inference"]) for r in rows] == list(bench.TWO_DIGIT)
    assert all(r["classes"] == 100 and r["x_dim"] == 1568 and r["step_ms"] > 0 for r in rows)
    by = {(r["model"], r["inference"]): r for r in rows}
    assert by["m2", "enum"]["speedup_vs_enum"] == 1.0
    assert by["m2", "gumbel-cat-kl"]["speedup_vs_enum"] > 3  # 100 decoder passes against one
    # the hierarchical model's exact sum runs its decoder once: far below M2's
    assert by["hierarchical", "enum"]["speedup_vs_enum"] > 3
    report = bench.format_report([{**r, "warmup": 1, "torch": "-", "pyro": "-", "device": "cpu",
                                   "threads": 1} for r in rows])
    assert "two-digit MNIST, 1,568 pixels" in report and "| m2 | gumbel-cat-kl |" in report
    assert "| two-digit | enum |" in report and "| hierarchical | enum |" in report


def test_without_mnist_the_two_digit_table_says_so(monkeypatch):
    def no_data(*args, **kwargs):
        raise bench.data_lib.DataError("no MNIST found (downloads are off)")

    monkeypatch.setattr(bench.data_lib, "load", no_data)
    rows = bench.two_digit_rows(bench.Plan(memory=False), log=lambda message: None)
    assert len(rows) == 1 and rows[0]["skipped"]
    report = bench.format_report([{**rows[0], "warmup": 1, "torch": "-", "pyro": "-",
                                   "device": "cpu", "threads": 1}])
    assert "Two-digit MNIST (K = 100): not measured (no MNIST found" in report
