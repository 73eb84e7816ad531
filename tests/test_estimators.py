"""The discrete-label estimators (sum-and-sample, RLOO, the unordered set, Gumbel-Rao):
their ELBO values equal a hand computation on the same networks and draws, the unbiased
ones' gradients average to the exact sum's (and a deliberately wrong variant fails the
same test), and Gumbel-Rao's gradient varies less than straight-through's."""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn import functional as F

from conftest import make_batch, small_pair
from ppl_ssvae import Batch
from ppl_ssvae.estimators import RLOO, SumAndSample, UnorderedSet, log_set_probabilities
from ppl_ssvae.reference import _bracket, m2_negative_elbo
from ppl_ssvae.relaxed import CategoricalKLGumbelRao, conditional_gumbel, straight_through


def hand_estimate(pair, batch, estimator, seed):
    """The estimator's ELBO of an unlabelled batch, by hand: the same labels (its
    ``choose``, drawn first), the same z noise (drawn next, one per label), then the
    weights each estimator gives the brackets of ``ppl_ssvae.reference``."""
    model, guide, x = pair.model, pair.guide, batch.x_u
    with torch.no_grad():
        log_q = F.log_softmax(guide.classify(x), -1)
        torch.manual_seed(seed)
        labels = estimator.choose(log_q)  # (m, B)
        eps = torch.randn(len(labels), len(x), model.z_dim)
        f = _bracket(model, guide, x, labels, eps)  # (m, B)
        q = log_q.exp()
        entropy = -(q * log_q).sum(-1)
        q_at = q.gather(-1, labels.T).T
        if isinstance(estimator, SumAndSample):
            k = estimator.samples
            estimate = (q_at[:k] * f[:k]).sum(0) + (1 - q_at[:k].sum(0)) * f[k]
        elif isinstance(estimator, RLOO):
            estimate = f.mean(0)
        else:  # the unordered set: q(s) P^{D-s}(S - s) / P(S), by sums over the orders
            estimate = torch.zeros(len(x))
            for b in range(len(x)):
                p, members = q[b].tolist(), labels[:, b].tolist()
                whole = set_probability(p, members)
                for j, s in enumerate(members):
                    others = [p[i] / (1 - p[s]) if i != s else 0.0 for i in range(len(p))]
                    left = set_probability(others, [m for m in members if m != s])
                    estimate[b] += p[s] * left / whole * f[j, b]
    return float(-(batch.n_u / len(x)) * (estimate + entropy).sum())


def set_probability(p: list[float], members: list[int]) -> float:
    """P(drawing ``members`` without replacement, in any order): a sum over the orders."""
    total = 0.0
    for order in itertools.permutations(members):
        probability, used = 1.0, 0.0
        for i in order:
            probability *= p[i] / (1 - used)
            used += p[i]
        total += probability
    return total


ESTIMATORS = [SumAndSample(2), SumAndSample(0), RLOO(3), UnorderedSet(3)]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: f"{type(e).__name__}-{e.samples}")
def test_elbo_equals_the_hand_computation(tiny, estimator):
    pair, _ = small_pair()
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u, n_u=full.n_u)
    torch.manual_seed(5)
    by_pyro = estimator.loss(pair.model, pair.guide, batch)
    assert by_pyro == pytest.approx(hand_estimate(pair, batch, estimator, seed=5), rel=1e-4)


@pytest.mark.parametrize("estimator", [SumAndSample(10), UnorderedSet(10)],
                         ids=["sum-and-sample", "unordered-set"])
def test_at_every_label_the_estimate_is_the_exact_sum(tiny, estimator):
    """k = K and S = K evaluate every label with weight q(y): the enumerated ELBO of the
    hand computation, its z noise put in the order the labels were evaluated in."""
    pair, _ = small_pair()
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u, n_u=full.n_u, x_l=full.x_l, y_l=full.y_l, n_l=full.n_l)
    torch.manual_seed(7)
    by_pyro = estimator.loss(pair.model, pair.guide, batch)
    torch.manual_seed(7)
    with torch.no_grad():
        labels = estimator.choose(F.log_softmax(pair.guide.classify(batch.x_u), -1))
    eps = torch.randn(10, len(batch.x_u), pair.model.z_dim)
    eps_l = torch.randn(len(batch.x_l), pair.model.z_dim)
    by_class = torch.empty_like(eps).scatter_(0, labels.unsqueeze(-1).expand_as(eps), eps)
    with torch.no_grad():
        by_hand = float(m2_negative_elbo(pair.model, pair.guide, batch, by_class, eps_l))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_set_probabilities_match_sums_over_orders():
    torch.manual_seed(0)
    for scale in (0.5, 3.0, 8.0):
        log_p = F.log_softmax(torch.randn(7, dtype=torch.float64) * scale, -1)
        members = torch.randperm(7)[:4]
        whole, without, without_two = log_set_probabilities(log_p[members].unsqueeze(-1))
        p, chosen = log_p.exp().tolist(), members.tolist()
        assert float(whole) == pytest.approx(math.log(set_probability(p, chosen)), abs=1e-4)
        for j, s in enumerate(chosen):
            others = [p[i] / (1 - p[s]) if i != s else 0.0 for i in range(7)]
            rest = [m for m in chosen if m != s]
            assert float(without[j]) == pytest.approx(math.log(set_probability(others, rest)), abs=1e-4)
            for j2, s2 in enumerate(chosen):
                if s2 != s:
                    two = [p[i] / (1 - p[s] - p[s2]) if i not in (s, s2) else 0.0 for i in range(7)]
                    expected = set_probability(two, [m for m in rest if m != s2])
                    assert float(without_two[j, j2]) == pytest.approx(math.log(expected), abs=1e-4)


# ------------------------------------------------------------------ unbiased gradients

class OwnSignalRLOO(RLOO):
    """A deliberately wrong RLOO: each label's baseline includes its own signal (the
    mean of all S), which shrinks the score-function gradient by (S - 1) / S."""

    def baseline(self, f):
        return f.mean(0, keepdim=True).expand_as(f)


CALLS, COPIES = 24, 20


def classifier_gradients(pair, batch, elbo, seed):
    """CALLS gradient estimates of the classifier's parameters: (CALLS, P)."""
    pyro.set_rng_seed(seed)
    params = list(pair.guide.classifier.parameters())
    estimates = []
    for _ in range(CALLS):
        pair.zero_grad(set_to_none=True)
        elbo.loss_and_grads(pair.model, pair.guide, batch)
        estimates.append(torch.cat([p.grad.flatten() for p in params]))
    return torch.stack(estimates)


@pytest.fixture(scope="module")
def exact_gradient(tiny_module):
    pair, _ = small_pair()
    images = make_batch(tiny_module, b_u=8).x_u.repeat(COPIES, 1)
    batch = Batch(x_u=images, n_u=len(images))
    return pair, batch, classifier_gradients(pair, batch, TraceEnum_ELBO(max_plate_nesting=1), 0)


@pytest.fixture(scope="module")
def tiny_module():
    from ppl_ssvae.data import synthetic
    return synthetic(seed=0)


def mean_square_z(estimates: torch.Tensor, exact: torch.Tensor) -> float:
    """The mean over coordinates of z^2, z the difference of the two means over its
    standard error: about 1 for an unbiased estimator, far above for a biased one."""
    variance = estimates.var(0) / len(estimates) + exact.var(0) / len(exact)
    keep = variance > 0
    z = (estimates.mean(0) - exact.mean(0))[keep] / variance[keep].sqrt()
    return float((z**2).mean())


@pytest.mark.parametrize("estimator", [RLOO(2), SumAndSample(1), UnorderedSet(3)],
                         ids=["rloo", "sum-and-sample", "unordered-set"])
def test_gradients_average_to_the_exact_sums(exact_gradient, estimator):
    pair, batch, exact = exact_gradient
    assert mean_square_z(classifier_gradients(pair, batch, estimator, 1), exact) < 2.5


def test_the_unbiasedness_test_has_power(exact_gradient):
    pair, batch, exact = exact_gradient
    assert mean_square_z(classifier_gradients(pair, batch, OwnSignalRLOO(2), 1), exact) > 5


# ---------------------------------------------------------------------------- gumbel-rao

def test_conditional_gumbel_noise_has_the_drawn_class_as_its_argmax():
    torch.manual_seed(0)
    logits = F.log_softmax(torch.randn(50, 6), -1)
    hard = F.one_hot(torch.distributions.Categorical(logits=logits).sample(), 6).float()
    perturbed = conditional_gumbel(logits, hard, 30)
    assert bool((perturbed.argmax(-1) == hard.argmax(-1)).all())
    # the maximum is Gumbel(logsumexp(logits)): mean logsumexp + Euler's constant
    top = perturbed.max(-1).values
    assert float(top.mean()) == pytest.approx(0.5772, abs=0.05)


def test_gumbel_rao_varies_less_than_straight_through_on_the_same_draws():
    """On the same drawn classes, the gradient of f(y) = |y - target|^2 with respect to
    the logits: straight-through's from the one noise that drew each class, Gumbel-Rao's
    averaged over 20 draws of the noise given that class. Same forward value, same mean
    in expectation, less variance."""
    torch.manual_seed(0)
    logits = torch.randn(6, requires_grad=True)
    target = torch.linspace(0, 1, 6)
    st_grads, rao_grads = [], []
    for _ in range(400):
        log_q = F.log_softmax(logits, -1)
        gumbel = -torch.empty(6).exponential_().log()
        soft = F.softmax(log_q + gumbel, -1)
        y = straight_through(soft)
        (g,) = torch.autograd.grad(((y - target) ** 2).sum(), logits)
        st_grads.append(g)
        rao = CategoricalKLGumbelRao(torch.tensor(1.0), logits=F.log_softmax(logits, -1),
                                     noise_draws=20)
        y_rao = rao.given_class(y.detach())
        assert torch.equal(y_rao, y.detach())
        (g,) = torch.autograd.grad(((y_rao - target) ** 2).sum(), logits)
        rao_grads.append(g)
    st, rao = torch.stack(st_grads), torch.stack(rao_grads)
    assert float(rao.var(0).sum()) < 0.85 * float(st.var(0).sum())  # 0.69 here
    # the same expected gradient: Rao-Blackwellisation changes the variance, not the mean
    assert torch.allclose(rao.mean(0), st.mean(0), atol=4 * float(st.std(0).max()) / 20)


def test_gumbel_rao_trains_the_pair(tiny):
    pair, _ = small_pair(inference="gumbel-rao")
    batch = make_batch(tiny)
    trace = pyro.poutine.trace(pair.guide).get_trace(batch)
    y = trace.nodes["unlabelled/y"]["value"]
    assert bool(((y == 0) | (y == 1)).all()) and torch.equal(y.sum(-1), torch.ones(len(y)))
    terms = pair.loss_and_grads(batch)
    assert all(math.isfinite(v) for v in terms.values())
    assert any(float(p.grad.abs().sum()) > 0 for p in pair.guide.classifier.parameters())


@pytest.mark.parametrize("method", ["sum-and-sample", "rloo", "unordered-set", "gumbel-rao"])
def test_a_run_of_each_estimator_resumes_exactly_and_evaluates(tmp_path, method, capsys):
    """Stopped at step 3 and resumed to 6, a run ends where the straight run ends (its
    draws of labels and noise come from the checkpointed generators); ``evaluate`` then
    reads it."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from clitools import FAST
    from ppl_ssvae.cli import main

    common = ["train", *FAST, "--inference", method, "--samples", "3", "--epochs", "1",
              "--seed", "2", "--input-dropout", "0.2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*common, "--max-steps", "6", "--out", str(straight)]) == 0
    assert main([*common, "--max-steps", "3", "--out", str(resumed)]) == 0
    assert main([*common, "--max-steps", "6", "--resume", "--out", str(resumed)]) == 0

    def rows(run):
        timing = ("seconds", "examples_per_second")
        return [{k: v for k, v in json.loads(line).items() if k not in timing}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert rows(resumed) == rows(straight)
    assert main(["evaluate", "--run", str(resumed), "--samples", "2", "--max-images", "50"]) == 0
    evaluation = json.loads((resumed / "evaluation.json").read_text())
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and evaluation["model"] == "m2"
