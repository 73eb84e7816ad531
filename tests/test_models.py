"""The model family: every model x inference pair trains on tiny data, the
continuous-weight models' ELBOs equal hand computations on the same draws, the
Dirichlet KL equals its closed form, and the supervised baseline is maximum
likelihood."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence
from torch.nn import functional as F

from conftest import data_shape, examples, make_batch, small_pair, small_settings
from ppl_ssvae import Batch, evaluate
from ppl_ssvae.cli import main
from ppl_ssvae.registry import MODELS, UnsupportedError, build, check
from ppl_ssvae.relaxed import LogSpaceDirichlet, log_of
from ppl_ssvae.train import train

COMBINATIONS = [(m, i) for m, spec in MODELS.items() for i in spec.inferences]


@pytest.mark.parametrize(("model", "inference"), COMBINATIONS)
def test_every_combination_takes_steps_with_finite_loss(tiny, model, inference):
    pair, _ = small_pair(model=model, inference=inference,
                         particles=2 if inference.startswith("iwae") else 1)
    optimizer = torch.optim.Adam(pair.parameters(), lr=1e-3)
    for step in range(3):
        batch = make_batch(tiny, seed=step) if data_shape(model) == (10, 784) else \
            examples(model, seed=step)  # a model of two-digit images
        terms = pair.loss_and_grads(batch, step)
        assert all(math.isfinite(v) for v in terms.values()), terms
        grads = [p.grad for p in pair.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        optimizer.step()
        optimizer.zero_grad()


def test_unsupported_combinations_say_what_is_supported(capsys):
    with pytest.raises(UnsupportedError, match="reparam, analytic-kl, iwae"):
        check("dirichlet", "enum")
    with pytest.raises(UnsupportedError, match="m2, logistic-normal-prior, dirichlet, mlp"):
        check("m3", "enum")
    code = main(["train", "--model", "mlp", "--inference", "gumbel", "--dataset", "synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "it takes ml" in err


def test_list_prints_every_model_and_its_inferences(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, spec in MODELS.items():
        line = next(line for line in lines if line.split()[0] == name)
        assert all(inference in line for inference in spec.inferences)


# ---------------------------------------------------------------- hand computations

def _normal(x, loc, scale):
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _bernoulli(x, logits):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _dirichlet(log_alpha, c):
    return ((c - 1) * log_alpha).sum(-1) + torch.lgamma(c.sum(-1)) - torch.lgamma(c).sum(-1)


@pytest.mark.parametrize("temperature, labelled_input, weight", [
    (1.0, "weights", 1.0), (1 / 3, "weights", 1.0), (1 / 3, "one-hot", 1.0),
    (1 / 3, "one-hot", 500.0)])
def test_logistic_normal_prior_elbo_equals_the_hand_sum(tiny, temperature, labelled_input, weight):
    """The unlabelled part: log N(a; 0, I / tau^2) + log N(z) + log p(x | z, softmax(a))
    - log q; the labelled part adds log softmax(a)_y, and with ``--labelled-input
    one-hot`` reads e_y in place of softmax(a) in p(x | z, .) and q(z | x, .); each
    scaled by N / B, the labelled part also by ``--labelled-weight``. The noise is drawn
    in the guide's order: a then z, unlabelled then labelled."""
    pair, _ = small_pair(model="logistic-normal-prior", inference="reparam",
                         temperature=temperature, labelled_input=labelled_input)
    batch = make_batch(tiny)
    batch.labelled_weight = weight
    model, guide = pair.model, pair.guide
    pyro.set_rng_seed(11)
    by_pyro = -Trace_ELBO(max_plate_nesting=1).loss(model, guide, batch)
    pyro.set_rng_seed(11)
    by_hand = 0.0
    with torch.no_grad():
        for x, y, n in ((batch.x_u, None, batch.n_u), (batch.x_l, batch.y_l, batch.n_l)):
            loc, scale = guide.scores(x)
            a = loc + scale * torch.randn(len(x), 10)
            alpha = a.softmax(-1)
            if y is not None and labelled_input == "one-hot":
                alpha = F.one_hot(y, 10).float()
            z_loc, z_scale = guide.encode_z(x, alpha)
            z = z_loc + z_scale * torch.randn(len(x), model.z_dim)
            elbo = (_normal(a, torch.zeros(10), torch.ones(10) / temperature)
                    - _normal(a, loc, scale)
                    + _normal(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal(z, z_loc, z_scale) + _bernoulli(x, model.decoder(z, alpha)))
            if y is not None:
                elbo = elbo + a.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
            by_hand += (1.0 if y is None else weight) * n / len(x) * float(elbo.sum())
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_dirichlet_elbo_equals_the_hand_sum_at_the_guides_draws(tiny):
    pair, settings = small_pair(model="dirichlet", inference="reparam")
    batch = make_batch(tiny)
    model, guide = pair.model, pair.guide
    pyro.set_rng_seed(12)
    by_pyro = -Trace_ELBO(max_plate_nesting=1).loss(model, guide, batch)
    pyro.set_rng_seed(12)
    trace = pyro.poutine.trace(guide).get_trace(batch)  # the same draws
    beta0 = torch.full((10,), settings.dirichlet_concentration)
    by_hand = 0.0
    with torch.no_grad():
        for part, x, y, n in (("unlabelled", batch.x_u, None, batch.n_u),
                              ("labelled", batch.x_l, batch.y_l, batch.n_l)):
            alpha = trace.nodes[f"{part}/alpha"]["value"]
            z = trace.nodes[f"{part}/z"]["value"]
            log_alpha = log_of(alpha)
            z_loc, z_scale = guide.encode_z(x, alpha)
            elbo = (_dirichlet(log_alpha, beta0) - _dirichlet(log_alpha, guide.concentration(x))
                    + _normal(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal(z, z_loc, z_scale) + _bernoulli(x, model.decoder(z, alpha)))
            if y is not None:
                elbo = elbo + log_alpha.gather(-1, y[:, None]).squeeze(-1)
            by_hand += n / len(x) * float(elbo.sum())
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_dirichlet_kl_term_equals_its_closed_form(tiny):
    """E_q[log q(alpha|x) - log p(alpha)], averaged over many of the guide's draws,
    against KL(Dir(c) || Dir(beta0)) written out by hand (and PyTorch's)."""
    pair, settings = small_pair(model="dirichlet", inference="reparam")
    x = make_batch(tiny).x_u
    with torch.no_grad():
        c = pair.guide.concentration(x)
        q, p = LogSpaceDirichlet(c), LogSpaceDirichlet(pair.model.concentration)
        alpha = q.rsample((20_000,))
        draws = (q.log_prob(alpha) - p.log_prob(alpha)).double()
    beta = torch.full_like(c, settings.dirichlet_concentration)
    c0, b0 = c.sum(-1), beta.sum(-1)
    closed_form = (torch.lgamma(c0) - torch.lgamma(c).sum(-1) - torch.lgamma(b0)
                   + torch.lgamma(beta).sum(-1)
                   + ((c - beta) * (torch.digamma(c) - torch.digamma(c0)[:, None])).sum(-1))
    torch.testing.assert_close(closed_form, kl_divergence(q, p))
    error = draws.std(0) / math.sqrt(len(draws))
    assert float(((draws.mean(0) - closed_form) / error).abs().max()) < 4.5


@pytest.mark.parametrize(("model", "inference"), [
    ("dirichlet", "analytic-kl"), ("logistic-normal-prior", "analytic-kl"),
    ("m2", "gumbel-cat-kl"), ("m2", "st-gumbel-cat-kl"), ("m2", "logistic-normal-cat-kl")])
def test_analytic_kl_swaps_monte_carlo_kl_for_the_closed_form(tiny, model, inference):
    """With the same draws, TraceMeanField_ELBO differs from Trace_ELBO by exactly
    sum over sites of (one-draw estimate of the KL - the closed-form KL); for the
    relaxed y of ``gumbel-cat-kl`` the closed form is the categorical KL."""
    pair, _ = small_pair(model=model, inference=inference)
    batch = make_batch(tiny)
    pyro.set_rng_seed(13)
    mean_field = TraceMeanField_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(13)
    with torch.no_grad():
        trace = pyro.poutine.trace(pair.guide).get_trace(batch)
        replay = pyro.poutine.trace(pyro.poutine.replay(pair.model, trace)).get_trace(batch)
    monte_carlo = -float(replay.log_prob_sum() - trace.log_prob_sum())
    difference = 0.0
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            one_draw = site["fn"].log_prob(site["value"]) - replay.nodes[name]["fn"].log_prob(
                site["value"])
            closed = kl_divergence(site["fn"], replay.nodes[name]["fn"])
            difference += float((site["scale"] * (closed - one_draw)).sum())
    assert mean_field == pytest.approx(monte_carlo + difference, rel=1e-5)


def test_dirichlet_trains_for_hundreds_of_steps_with_finite_loss(tiny):
    pair, _ = small_pair(model="dirichlet", inference="reparam", dirichlet_concentration=0.05)
    optimizer = torch.optim.Adam(pair.parameters(), lr=3e-3)
    losses = []
    for step in range(300):
        batch = make_batch(tiny, b_u=8, b_l=8, n_u=2000, n_l=100, seed=step)
        losses.append(pair.loss_and_grads(batch, step)["loss"])
        assert math.isfinite(losses[-1]), f"step {step}"
        optimizer.step()
        optimizer.zero_grad()
    assert sum(losses[-20:]) < sum(losses[:20])


# ---------------------------------------------------------------- the supervised baseline

def test_mlp_is_maximum_likelihood_on_the_labelled_images(tiny):
    pair, _ = small_pair(model="mlp", inference="ml")
    batch = make_batch(tiny)
    loss = Trace_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    with torch.no_grad():
        log_q = pair.classify(batch.x_l).log_softmax(-1)
    nll = -float(log_q.gather(-1, batch.y_l[:, None]).sum()) * batch.n_l / len(batch.x_l)
    assert loss == pytest.approx(nll, rel=1e-5)
    without_unlabelled = Batch(x_l=batch.x_l, y_l=batch.y_l, n_l=batch.n_l)
    assert Trace_ELBO().loss(pair.model, pair.guide, without_unlabelled) == pytest.approx(loss)
    assert pair.loss_and_grads(batch)["classifier"] == 0.0  # no second copy of the term


@pytest.mark.parametrize("model", ["mlp", "dirichlet"])
def test_training_runs_end_to_end(tmp_path, model):
    inference = MODELS[model].inferences[0]
    settings = small_settings(model=model, inference=inference, max_steps=4, batch_size=50,
                              labelled_batch_size=20, out=str(tmp_path), eval_batch_size=500)
    summary = train(settings)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert (tmp_path / "learning_curves.png").exists()
    has_z = model != "mlp"
    assert (tmp_path / "samples.png").exists() == has_z
    assert (tmp_path / "kl_per_dim.png").exists() == has_z
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(row["kl_per_dim"]) == (settings.z_dim if has_z else 0)


def test_kl_per_dimension_reads_q_z_at_the_point_estimate_of_alpha(tiny):
    pair, _ = small_pair(model="logistic-normal-prior", inference="reparam")
    x = tiny.valid.x[:50]
    kl = evaluate.kl_per_dimension(pair, x)
    with evaluate.evaluation(pair):
        loc, scale = pair.guide.encode_z(x, pair.classify(x).softmax(-1))
        by_hand = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).mean(0)
    torch.testing.assert_close(kl, by_hand)


def test_build_gives_each_model_its_own_networks():
    for name, spec in MODELS.items():
        pair = build(small_settings(model=name, inference=spec.inferences[0]),
                     *spec.example_data)
        assert sum(p.numel() for p in pair.parameters()) > 0
        assert hasattr(pair.guide, "classify")


@pytest.mark.parametrize("model", [name for name, spec in MODELS.items() if spec.classes])
def test_a_model_that_needs_its_classes_refuses_other_data_in_one_line(model, capsys):
    """The two-digit models read a class as two digits: on MNIST's 10 classes (synthetic
    here) they are refused before any step, saying which data set to use."""
    with pytest.raises(UnsupportedError, match="two-digit-mnist"):
        build(small_settings(model=model), 10, 784)
    code = main(["train", "--model", model, "--dataset", "synthetic", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--dataset two-digit-mnist" in err
