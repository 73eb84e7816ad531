"""Inference methods swapped under one fixed model: score-function gradients
against the exact enumerated one, the relaxed families' treatment of observed
labels, the temperature schedule, and the importance-weighted bound against
Pyro's RenyiELBO."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO

from conftest import make_batch, small_pair, small_settings
from ppl_ssvae import Batch, build, one_hot
from ppl_ssvae.inference import (
    AVERAGE_BASELINE_PARAM,
    INFERENCES,
    RELAXATIONS,
    ExactY,
    RelaxedY,
    SampledY,
)
from ppl_ssvae.iwae import ImportanceWeightedELBO


def use(pair, family):
    """Swap the inference family of y under the same model and guide."""
    pair.model.y_family = pair.guide.y_family = family
    return pair


# ---------------------------------------------------------------- score function

def _logit_gradients(pair, batch, elbo, repeats, warm_up=0):
    """Gradients of the negative ELBO with respect to q(y|x)'s logits, held as a
    leaf tensor: their mean over ``repeats`` calls, its standard error, and the
    standard deviation of one call's estimate."""
    logits = pair.guide.classify(batch.x_u).detach().clone().requires_grad_()
    pair.guide.classify = lambda x: logits
    draws = []
    for i in range(warm_up + repeats):
        logits.grad = None
        elbo.loss_and_grads(pair.model, pair.guide, batch)
        if i >= warm_up:
            draws.append(logits.grad.clone())
    del pair.guide.classify
    draws = torch.stack(draws)
    return draws.mean(0), draws.std(0) / math.sqrt(repeats), draws.std(0)


@pytest.fixture(scope="module")
def sensitive_pair():
    """A small M2 whose decoder depends strongly on y (scaled-up y weights), on 12
    pixels and 3 classes, so that the exact gradient is large next to the score
    function's Monte Carlo error."""
    pyro.set_rng_seed(0)
    pair = build(small_settings(inference="tracegraph-nn", hidden=(16,), z_dim=2), 3, 12)
    with torch.no_grad():
        pair.model.decoder.first.linears[1].weight.mul_(5.0)
    x = (torch.rand(4, 12) < 0.5).float()
    return pair, Batch(x_u=x)


def test_score_function_gradients_agree_with_the_exact_gradient(sensitive_pair):
    pair, batch = sensitive_pair
    particles = dict(num_particles=2000, vectorize_particles=True, max_plate_nesting=1)
    exact, exact_se, _ = _logit_gradients(use(pair, ExactY({"enumerate": "parallel"})), batch,
                                          TraceEnum_ELBO(**particles), repeats=10)
    spreads = {}
    for name, family, elbo_class, warm_up in [
            ("score", SampledY("none"), Trace_ELBO, 0),
            ("tracegraph", SampledY("average", beta=0.5), TraceGraph_ELBO, 10),
            ("tracegraph-nn", SampledY("learned", beta=0.5), TraceGraph_ELBO, 10)]:
        pyro.clear_param_store()
        mean, se, spreads[name] = _logit_gradients(use(pair, family), batch,
                                                   elbo_class(**particles), 30, warm_up)
        z = (mean - exact) / (se**2 + exact_se**2).sqrt()
        assert float(z.abs().max()) < 4.5, f"{name}: {mean} vs exact {exact}"
        # the comparison has power: a missing or zero estimator would be far off
        assert float((exact.abs() / se).max()) > 5
    # the baselines cut the variance of the score-function estimator
    assert float(spreads["tracegraph"].mean()) < float(spreads["score"].mean()) / 4
    assert float(spreads["tracegraph-nn"].mean()) < float(spreads["score"].mean()) / 4


def test_running_average_baseline_survives_a_shorter_batch(tiny):
    pair, _ = small_pair(inference="tracegraph")
    pyro.clear_param_store()
    for size in (8, 8, 5):
        pair.loss_and_grads(make_batch(tiny, b_u=size))
        average = pyro.get_param_store()[AVERAGE_BASELINE_PARAM + "unlabelled/y"]
        assert average.shape == (size,)


def test_learned_baseline_is_trained_by_the_baseline_loss(tiny):
    pair, _ = small_pair(inference="tracegraph-nn")
    pair.loss_and_grads(make_batch(tiny))
    grads = [p.grad for p in pair.guide.baseline.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# ---------------------------------------------------------------- relaxed families

def test_temperature_follows_its_schedule():
    family = RelaxedY(temperature=2.0, minimum=0.5, decay=1e-3)
    for step in (0, 100, 1000, 10_000):
        family.set_step(step)
        assert family.temperature == pytest.approx(max(0.5, 2.0 * math.exp(-1e-3 * step)))
    assert RelaxedY(temperature=1.0, minimum=1.0, decay=0.1).minimum == 1.0


@pytest.mark.parametrize("name", ["gumbel", "st-gumbel", "logistic-normal",
                                  "iwae", "iwae-logistic-normal"])
def test_observed_labels_are_scored_by_the_exact_categorical(tiny, name):
    """A one-hot label has no finite relaxed density; the model scores it under
    Cat(1/K), so loss and gradients stay finite even at a low temperature."""
    pair, _ = small_pair(inference=name, temperature=0.1, temperature_min=0.1, particles=2)
    batch = make_batch(tiny)
    trace = pyro.poutine.trace(pair.model).get_trace(batch)
    site = trace.nodes["labelled/y"]
    assert isinstance(site["fn"], pyro.distributions.Categorical)
    torch.testing.assert_close(site["fn"].log_prob(batch.y_l),
                               torch.full((len(batch.y_l),), -math.log(10)))
    relaxed = pair.model.y_family.prior(pair.model.y_logits)
    assert not bool(torch.isfinite(relaxed.log_prob(one_hot(batch.y_l, 10))).all())
    terms = pair.loss_and_grads(batch)
    assert all(math.isfinite(v) for v in terms.values())
    for p in pair.parameters():
        assert p.grad is None or bool(torch.isfinite(p.grad).all())


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_relaxed_sites_are_relaxed_in_model_and_guide(tiny, relaxation):
    pair, _ = small_pair(inference=relaxation)
    batch = make_batch(tiny)
    guide = pyro.poutine.trace(pair.guide).get_trace(batch)
    model = pyro.poutine.trace(pyro.poutine.replay(pair.model, guide)).get_trace(batch)
    y = guide.nodes["unlabelled/y"]["value"]
    assert y.shape == (len(batch.x_u), 10) and bool(torch.allclose(y.sum(-1), torch.ones(1)))
    hard = bool(((y == 0) | (y == 1)).all())
    assert hard == (relaxation == "st-gumbel")
    for trace in (guide, model):
        assert trace.nodes["unlabelled/y"]["fn"].has_rsample


# ---------------------------------------------------------------- importance weighting

def test_iwae_with_one_plate_is_renyi_elbo_at_alpha_zero(tiny):
    """Without subsampling and with one plate Pyro's RenyiELBO(alpha=0) keeps one
    weight per example, and the two agree draw for draw."""
    pair, _ = small_pair(inference="iwae")
    full = make_batch(tiny)
    for batch in (Batch(x_u=full.x_u), Batch(x_l=full.x_l, y_l=full.y_l)):
        kwargs = dict(num_particles=5, vectorize_particles=True, max_plate_nesting=1)
        pyro.set_rng_seed(1)
        ours = ImportanceWeightedELBO(**kwargs).loss(pair.model, pair.guide, batch)
        pyro.set_rng_seed(1)
        renyi = RenyiELBO(alpha=0.0, **kwargs).loss(pair.model, pair.guide, batch)
        assert ours == pytest.approx(renyi, rel=1e-6)


def test_iwae_weighs_each_example_and_scales_outside_the_log(tiny):
    """With two plates subsampled from larger sets, the bound is N/B times the
    per-example bounds of each part: RenyiELBO on each part alone, unscaled, with
    the same draws (the guide draws the unlabelled part first)."""
    pair, _ = small_pair(inference="iwae")
    full = make_batch(tiny)
    kwargs = dict(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(2)
    ours = ImportanceWeightedELBO(**kwargs).loss(pair.model, pair.guide, full)
    pyro.set_rng_seed(2)
    renyi = RenyiELBO(alpha=0.0, **kwargs)
    unlabelled = renyi.loss(pair.model, pair.guide, Batch(x_u=full.x_u))
    labelled = renyi.loss(pair.model, pair.guide, Batch(x_l=full.x_l, y_l=full.y_l))
    expected = (full.n_u / len(full.x_u) * unlabelled + full.n_l / len(full.x_l) * labelled)
    assert ours == pytest.approx(expected, rel=1e-5)


def test_iwae_with_one_particle_is_the_elbo(tiny):
    pair, _ = small_pair(inference="iwae")
    batch = make_batch(tiny)
    pyro.set_rng_seed(3)
    ours = ImportanceWeightedELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    assert ours == pytest.approx(elbo, rel=1e-5)


def test_iwae_bound_tightens_with_particles(tiny):
    pair, _ = small_pair(inference="iwae-logistic-normal")
    batch = make_batch(tiny)
    bounds = []
    for particles in (1, 10, 100):
        elbo = ImportanceWeightedELBO(num_particles=particles, vectorize_particles=particles > 1,
                                      max_plate_nesting=1)
        bounds.append(-sum(elbo.loss(pair.model, pair.guide, batch) for _ in range(10)) / 10)
    assert bounds[0] < bounds[1] < bounds[2]


def test_iwae_refuses_a_score_function_guide(tiny):
    pair, _ = small_pair(inference="score")
    with pytest.raises(NotImplementedError, match="reparameterised"):
        ImportanceWeightedELBO(max_plate_nesting=1).loss(pair.model, pair.guide,
                                                         make_batch(tiny))


def test_every_inference_is_documented():
    for inference in INFERENCES.values():
        assert inference.description and inference.elbo_class is not None


def test_a_sampled_ys_learning_signal_is_its_own_image_alone(tiny):
    """Under Trace_ELBO one call over both parts adds the labelled batch's terms to every
    unlabelled y's score-function signal; the objective calls each part apart, so the
    classifier's gradient is the unlabelled part's alone plus the labelled part's, on
    the same draws, and differs from the one-call gradient."""
    pair, _ = small_pair(inference="score", classifier_weight=0.0, batch_norm=False,
                         input_dropout=0.0)
    batch = make_batch(tiny)
    params = [p for p in pair.guide.parameters()]

    def grads(run):
        pair.zero_grad(set_to_none=True)
        pyro.set_rng_seed(7)
        run()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    objective = grads(lambda: pair.loss_and_grads(batch))
    unlabelled, labelled = batch.apart()
    elbo = Trace_ELBO(max_plate_nesting=1)
    apart = grads(lambda: (elbo.loss_and_grads(pair.model, pair.guide, unlabelled),
                           elbo.loss_and_grads(pair.model, pair.guide, labelled)))
    together = grads(lambda: elbo.loss_and_grads(pair.model, pair.guide, batch))
    for a, b in zip(objective, apart, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(objective, together, strict=True))
    pyro.set_rng_seed(7)
    value = pair.loss_and_grads(batch)["negative_elbo"] * batch.size
    pyro.set_rng_seed(7)
    assert value == pytest.approx(elbo.loss(pair.model, pair.guide, batch), rel=1e-5)  # same loss
