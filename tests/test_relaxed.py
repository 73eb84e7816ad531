"""The distributions on the simplex: their densities against hand formulas and
PyTorch's own, their samples against their stated laws, their low-temperature
limits, and the straight-through and log-space tricks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Dirichlet, MultivariateNormal, RelaxedOneHotCategorical

from ppl_ssvae.relaxed import (
    CategoricalKLConcrete,
    CategoricalKLConcreteStraightThrough,
    CategoricalKLLogisticNormal,
    Concrete,
    ConcreteStraightThrough,
    LogisticNormalSimplex,
    LogSpaceDirichlet,
    log_of,
)


def test_logistic_normal_density_is_the_gaussian_of_the_log_ratios():
    """log p(y) = log N(alr(y); m, (I + 11^T) / tau^2) - sum_k log y_k, by hand
    with PyTorch's multivariate normal."""
    torch.manual_seed(0)
    k, tau = 5, 0.7
    logits = torch.randn(3, k, dtype=torch.float64)
    q = LogisticNormalSimplex(tau, logits)
    y = q.rsample((4,))
    alr = y.log()[..., :-1] - y.log()[..., -1:]
    mean = (logits[:, :-1] - logits[:, -1:]) / tau
    cov = (torch.eye(k - 1, dtype=torch.float64) + 1.0) / tau**2
    by_hand = MultivariateNormal(mean, cov).log_prob(alr) - y.log().sum(-1)
    torch.testing.assert_close(q.log_prob(y), by_hand)


def test_logistic_normal_density_integrates_to_one():
    t = torch.linspace(1e-7, 1 - 1e-7, 400_001, dtype=torch.float64)
    y = torch.stack([t, 1 - t], -1)
    q = LogisticNormalSimplex(0.5, torch.tensor([0.3, -0.5], dtype=torch.float64))
    assert float(torch.trapezoid(q.log_prob(y).exp(), t)) == pytest.approx(1.0, abs=1e-4)


def test_logistic_normal_samples_follow_their_law():
    """softmax((logits + eps) / tau): the log-ratios have mean (l_k - l_K) / tau and
    covariance (I + 11^T) / tau^2."""
    torch.manual_seed(1)
    k, tau = 4, 0.5
    logits = torch.tensor([1.0, -0.5, 0.2, 0.0])
    y = LogisticNormalSimplex(tau, logits).rsample((200_000,))
    alr = (log_of(y)[:, :-1] - log_of(y)[:, -1:]).double()
    torch.testing.assert_close(alr.mean(0), ((logits[:-1] - logits[-1]) / tau).double(),
                               atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(alr.T), (torch.eye(k - 1) + 1.0).double() / tau**2,
                               atol=0.1, rtol=0.02)


def test_concrete_density_is_pytorchs_where_that_is_finite():
    torch.manual_seed(2)
    logits = torch.randn(6, 10)
    for tau in (2.0, 1.0, 0.5):
        q, reference = Concrete(torch.tensor(tau), logits=logits), \
            RelaxedOneHotCategorical(torch.tensor(tau), logits=logits)
        y = q.rsample((3,))
        torch.testing.assert_close(q.log_prob(y), reference.log_prob(y.detach().clone()),
                                   rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("cls", [CategoricalKLConcrete, CategoricalKLConcreteStraightThrough,
                                 CategoricalKLLogisticNormal])
def test_categorical_kl_is_the_kl_of_the_relaxed_categoricals(cls):
    """The KL ``gumbel-cat-kl`` uses is sum_k q_k log(q_k / p_k), at most log K, where
    the Monte Carlo KL of the relaxed densities keeps growing with q's confidence."""
    torch.manual_seed(3)
    tau = torch.tensor(0.5)
    logits_q, logits_p = torch.randn(4, 10) * 3, torch.randn(4, 10)
    q, p = cls(tau, logits=logits_q), cls(tau, logits=logits_p)
    by_hand = (logits_q.softmax(-1) * (logits_q.log_softmax(-1) - logits_p.log_softmax(-1))).sum(-1)
    torch.testing.assert_close(torch.distributions.kl_divergence(q, p), by_hand)

    confident = torch.zeros(10)
    confident[0] = 10.0
    q, p = cls(tau, logits=confident), cls(tau, logits=torch.zeros(10))
    assert float(torch.distributions.kl_divergence(q, p)) <= math.log(10)
    y = Concrete(tau, logits=confident).rsample((4000,))
    relaxed = Concrete(tau, logits=confident).log_prob(y) - Concrete(tau, logits=torch.zeros(10)).log_prob(y)
    assert float(relaxed.mean()) > 3 * math.log(10)


def test_relaxed_densities_stay_finite_at_low_temperature():
    """At tau = 0.05 most samples have components that underflow to 0, where
    PyTorch's formula (through log y) is not finite; the remembered log keeps ours finite."""
    torch.manual_seed(3)
    logits = 5 * torch.randn(500, 10)
    tau = torch.tensor(0.05)
    for q in (Concrete(tau, logits=logits), ConcreteStraightThrough(tau, logits=logits),
              LogisticNormalSimplex(tau, logits)):
        y = q.rsample()
        assert bool(torch.isfinite(q.log_prob(y)).all())
    y = Concrete(tau, logits=logits).rsample()
    plain = RelaxedOneHotCategorical(tau, logits=logits, validate_args=False)
    assert not bool(torch.isfinite(plain.log_prob(y.detach().clone())).all())


@pytest.mark.parametrize("cls", [Concrete, LogisticNormalSimplex])
def test_relaxed_samples_approach_one_hot_as_temperature_falls(cls):
    """The distance of a sample from its nearest corner, 1 - max_k y_k, goes to 0
    with the temperature; and the corner is drawn with probability softmax(logits)
    for Gumbel noise (the Gumbel-max property)."""
    torch.manual_seed(4)
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    gaps = []
    for tau in (1.0, 0.3, 0.1, 0.03, 0.01):
        y = cls(torch.tensor(tau), logits=logits).rsample((20_000,))
        gaps.append(float((1 - y.max(-1).values).mean()))
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.01 < gaps[0]
    if cls is Concrete:
        corners = torch.bincount(y.argmax(-1), minlength=4).float() / len(y)
        torch.testing.assert_close(corners, logits.softmax(-1), atol=0.01, rtol=0)


def test_straight_through_is_exactly_one_hot_forward_and_relaxed_backward():
    torch.manual_seed(5)
    logits = torch.randn(50, 10, requires_grad=True)
    tau = torch.tensor(0.5)
    torch.manual_seed(6)
    hard = ConcreteStraightThrough(tau, logits=logits).rsample()
    assert bool(((hard == 0) | (hard == 1)).all()) and bool((hard.sum(-1) == 1).all())
    weights = torch.randn(10)
    (hard * weights).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(6)  # the same noise: the soft sample the hard one was rounded from
    soft = Concrete(tau, logits=logits).rsample()
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    (soft * weights).sum().backward()
    torch.testing.assert_close(grad_hard, logits.grad)
    assert float(grad_hard.abs().sum()) > 0
    # the density is the relaxed sample's, not that of the one-hot it shows
    torch.testing.assert_close(ConcreteStraightThrough(tau, logits=logits).log_prob(hard),
                               Concrete(tau, logits=logits).log_prob(soft))


def test_log_space_dirichlet_is_the_dirichlet():
    torch.manual_seed(7)
    c = torch.tensor([0.05, 0.3, 1.0, 2.5])
    alpha = LogSpaceDirichlet(c).rsample((200_000,))
    reference = Dirichlet(c)
    torch.testing.assert_close(alpha.mean(0), reference.mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(alpha.var(0), reference.variance, atol=1e-3, rtol=0)
    x = Dirichlet(torch.tensor([1.3, 0.7, 2.0, 1.0])).sample((5,))
    torch.testing.assert_close(LogSpaceDirichlet(c).log_prob(x), reference.log_prob(x))


def test_log_space_dirichlet_gradient_is_the_gradient_of_the_mean():
    """d E[alpha_1] / dc = d (c_1 / sum c) / dc: the reparameterised gradient,
    averaged, is the exact one."""
    torch.manual_seed(8)
    c = torch.tensor([0.05, 0.3, 1.0, 2.5], requires_grad=True)
    LogSpaceDirichlet(c).rsample((400_000,))[:, 0].mean().backward()
    total = c.detach().sum()
    exact = -c.detach()[0] / total**2 * torch.ones(4)
    exact[0] += 1 / total
    torch.testing.assert_close(c.grad, exact, atol=3e-3, rtol=0)


def test_log_space_dirichlet_stays_finite_where_plain_sampling_underflows():
    torch.manual_seed(9)
    c = torch.full((1000, 10), 0.01, requires_grad=True)
    tiny = torch.finfo(torch.float32).tiny
    # PyTorch's sampler pins the components that underflow to the smallest float
    assert bool((Dirichlet(c.detach()).sample() == tiny).any())
    q = LogSpaceDirichlet(c)
    alpha = q.rsample()
    log_alpha = log_of(alpha)
    assert float(log_alpha.detach().min()) < 10 * math.log(tiny)  # far below what float32 holds
    log_ratio = q.log_prob(alpha) - LogSpaceDirichlet(torch.full((10,), 0.2)).log_prob(alpha)
    assert bool(torch.isfinite(log_alpha).all()) and bool(torch.isfinite(log_ratio).all())
    log_ratio.sum().backward()
    assert bool(torch.isfinite(c.grad).all())
