"""The ADGM (models/adgm.py, guides/adgm.py): its Pyro ELBO equals the ELBO written
by hand in plain PyTorch on the same networks and the same draws, and it learns."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn import functional as F

from conftest import assert_enumerated_gradients_match, make_batch, small_pair
from ppl_ssvae import Batch, evaluate
from ppl_ssvae.cli import main
from ppl_ssvae.models import M2


def normal_log_prob(x, loc, scale):
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def adgm_negative_elbo(model, guide, batch: Batch, draw=torch.randn) -> torch.Tensor:
    """-(ELBO_U + ELBO_L), y summed out in closed form. For one image::

        ELBO(x) = E_q(a|x) [ sum_k q(y_k|a,x) ( log p(x|y_k,z_k) + log p(y_k) + log p(z_k)
                                                + log p(a|x,y_k,z_k) - log q(z_k|a,x,y_k) )
                             - sum_k q(y_k|a,x) log q(y_k|a,x) - log q(a|x) ]

    with a and each z_k one reparameterised draw; the labelled ELBO is the bracket at
    the observed y, minus log q(a|x). The standard normal noise comes from ``draw(*shape)``
    in the order and shapes the guide draws it under parallel enumeration: per part,
    a (B, A), then z ((K, B, D) when y is enumerated)."""
    k = model.num_classes
    total = torch.zeros(())

    def bracket(x, a, y, eps_z):
        loc, scale = guide.encode_z_given_a(x, a, y)
        z = loc + scale * eps_z
        logits = model.decoder(z, y)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                     reduction="none").sum(-1)
        a_loc, a_scale = model.aux(x, y, z)
        return (log_px - math.log(k) + normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                + normal_log_prob(a, a_loc, a_scale) - normal_log_prob(z, loc, scale))

    def draw_a(x):
        loc, scale = guide.encode_a(x)
        a = loc + scale * draw(len(x), guide.a_dim)
        return a, normal_log_prob(a, loc, scale)

    if batch.x_u is not None:
        x = batch.x_u
        a, log_qa = draw_a(x)
        log_qy = F.log_softmax(guide.classify_given_a(x, a), -1)  # (B, K)
        ys = torch.arange(k).unsqueeze(1)  # (K, 1): every class index
        brackets = bracket(x, a, ys, draw(k, len(x), model.z_dim))  # (K, B)
        q = log_qy.exp()
        elbo = (q * brackets.T).sum(-1) - (q * log_qy).sum(-1) - log_qa
        total = total - batch.n_u / len(x) * elbo.sum()
    if batch.x_l is not None:
        x = batch.x_l
        a, log_qa = draw_a(x)
        elbo = bracket(x, a, batch.y_l, draw(len(x), model.z_dim)) - log_qa
        total = total - batch.n_l / len(x) * elbo.sum()
    return total


@pytest.mark.parametrize("part", ["unlabelled", "labelled", "both"])
def test_adgm_elbo_equals_hand_computation(tiny, part):
    pair, _ = small_pair(model="adgm")
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u if part != "labelled" else None, n_u=full.n_u,
                  x_l=full.x_l if part != "unlabelled" else None,
                  y_l=full.y_l if part != "unlabelled" else None, n_l=full.n_l)
    pyro.set_rng_seed(1)
    by_pyro = TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        by_hand = float(adgm_negative_elbo(pair.model, pair.guide, batch))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_adgm_gradients_match_the_hand_computation(tiny):
    pair, _ = small_pair(model="adgm")
    batch = make_batch(tiny)
    assert_enumerated_gradients_match(pair, batch, adgm_negative_elbo)


def test_adgm_is_m2_plus_one_node(tiny):
    """The model's trace has M2's sites plus an `a` per plate, nothing else."""
    pair, _ = small_pair(model="adgm")
    assert isinstance(pair.model, M2)
    batch = make_batch(tiny)
    model_sites = pyro.poutine.trace(pair.model).get_trace(batch).stochastic_nodes
    guide_sites = pyro.poutine.trace(pair.guide).get_trace(batch).stochastic_nodes
    m2, _ = small_pair(model="m2")
    m2_model_sites = pyro.poutine.trace(m2.model).get_trace(batch).stochastic_nodes
    m2_guide_sites = pyro.poutine.trace(m2.guide).get_trace(batch).stochastic_nodes
    assert set(model_sites) - set(m2_model_sites) == {"unlabelled/a", "labelled/a"}
    assert set(guide_sites) - set(m2_guide_sites) == {"unlabelled/a", "labelled/a"}
    assert set(m2_model_sites) <= set(model_sites)


def test_adgm_evaluation_protocol_is_deterministic_in_eval_mode(tiny):
    pair, _ = small_pair(model="adgm")
    x = tiny.valid.x[:20]
    with evaluate.evaluation(pair):
        first, second = pair.classify(x), pair.classify(x)
        loc, scale = pair.guide.encode_z(x, torch.arange(10).unsqueeze(1))
        a_bar, _ = pair.guide.encode_a(x)
        expected = pair.guide.encode_z_given_a(x, a_bar, torch.arange(10).unsqueeze(1))
    torch.testing.assert_close(first, second)
    assert loc.shape == (10, 20, pair.model.z_dim)
    torch.testing.assert_close(loc, expected[0])
    torch.testing.assert_close(scale, expected[1])
    pair.train()  # while training, a is drawn: two calls differ
    assert not torch.allclose(pair.guide.classify(x), pair.guide.classify(x))
    kl = evaluate.kl_per_dimension(pair, x)
    assert kl.shape == (pair.model.z_dim,) and bool((kl >= 0).all())


def test_adgm_trains_from_the_cli_beyond_chance(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "adgm", "--inference", "enum", "--dataset", "synthetic",
                 "--hidden", "64", "--z-dim", "8", "--activation", "softplus", "--no-batch-norm",
                 "--input-dropout", "0", "--classifier-weight", "0.1", "--epochs", "1",
                 "--lr", "3e-3", "--labelled-batch-size", "50", "--no-progress", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "adgm" and summary["test_accuracy"] > 0.5  # chance: 0.1
    for name in ("learning_curves.png", "kl_per_dim.png", "samples.png"):
        assert (out / name).exists()


def test_adgm_sequential_enumeration_gives_the_same_elbo(tiny):
    """enum-seq runs the guide once per label: a is drawn once and replayed in every
    run, z is drawn (B, D) per label, the labels visited last first."""
    pair, _ = small_pair(model="adgm", inference="enum-seq")
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u, n_u=full.n_u)
    pyro.set_rng_seed(3)
    by_pyro = TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    b, k = len(batch.x_u), pair.model.num_classes
    pyro.set_rng_seed(3)
    eps_a = torch.randn(b, pair.guide.a_dim)
    eps_z = torch.stack([torch.randn(b, pair.model.z_dim) for _ in range(k)]).flip(0)
    draws = iter([eps_a, eps_z])
    with torch.no_grad():
        by_hand = float(adgm_negative_elbo(pair.model, pair.guide, batch,
                                           draw=lambda *shape: next(draws)))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)
