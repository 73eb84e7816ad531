"""Model and guide are plain Pyro callables: Pyro's own ``SVI`` (with any ELBO, its
JIT-compiled ones included), ``Predictive`` and ``infer_discrete`` take them as they
are, without ppl_ssvae's training loop or objective."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO

from conftest import make_batch, small_pair, small_settings
from ppl_ssvae import evaluate, one_hot
from ppl_ssvae.distributions import BernoulliImage
from ppl_ssvae.registry import UnsupportedError, resolve


def test_pyros_own_svi_trains_the_pair(tiny):
    pair, _ = small_pair()
    batch = make_batch(tiny, b_u=32, b_l=16)
    svi = SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-2}),
              TraceEnum_ELBO(max_plate_nesting=1))
    losses = [svi.step(batch) for _ in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


def test_the_same_model_under_another_inference_method(tiny):
    """Swapping the ELBO and the guide's family for y leaves the model's code as it is."""
    pair, _ = small_pair(inference="gumbel")
    batch = make_batch(tiny)
    svi = SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert torch.isfinite(torch.tensor([svi.step(batch) for _ in range(3)])).all()


def test_predictive_draws_y_from_the_guide(tiny):
    """``Predictive`` with the guide draws each unlabelled image's y from q(y | x): over
    many draws the frequencies of the labels are the classifier's probabilities."""
    pair, _ = small_pair()
    with torch.no_grad():  # a classifier far from uniform, so that the prior's draws would differ
        for p in pair.guide.classifier.parameters():
            p.mul_(8)
    batch = make_batch(tiny, b_u=5, b_l=3)
    draws = Predictive(pair.model, guide=pair.guide, num_samples=400)(batch)
    y = draws["unlabelled/y"]
    assert y.shape == (400, 5) and not y.is_floating_point()  # class indices
    assert draws["labelled/z"].shape == (400, 3, pair.model.z_dim)
    with torch.no_grad():
        q_y = pair.guide.classify(batch.x_u).softmax(-1)
    assert q_y.max() > 0.5
    assert (one_hot(y, 10).mean(0) - q_y).abs().max() < 0.1  # 400 draws: the standard error is <= 0.025


def _posterior_by_hand(pair, x, latents):
    """p(y = k | x, z[, a]) from the model's terms for each k: log p(k) + log p(x | k, z)
    (+ log p(a | x, k, z) for the ADGM); p(z) does not depend on k."""
    model, k = pair.model, pair.model.num_classes
    z = latents["unlabelled/z"]
    ys = torch.arange(k).unsqueeze(1)  # (K, 1)
    with torch.no_grad():
        logits = model.decoder(z, ys)  # (K, B, 784)
        terms = BernoulliImage(logits).log_prob(x) + model.y_logits.log_softmax(-1)[:, None]
        if "unlabelled/a" in latents:
            loc, scale = model.aux(x, ys, z)
            terms = terms + pyro.distributions.Normal(loc, scale).log_prob(
                latents["unlabelled/a"]).sum(-1)
    return terms.T.softmax(-1)  # (B, K)


@pytest.mark.parametrize("model", ["m2", "adgm"])
def test_infer_discrete_gives_the_models_posterior_over_y(tiny, model):
    """``infer_discrete`` on the model under ``config_enumerate``, z (and a) taken from
    the guide: temperature 0 is the argmax of the exact posterior computed by hand
    from the model's per-y terms; temperature 1 draws from it."""
    pair, _ = small_pair(model=model)
    with torch.no_grad():  # a decoder that reads y weakly: a posterior spread over classes
        pair.model.decoder.first.linears[1].weight.mul_(0.02)
        pair.model.decoder.first.linears[0].weight.mul_(0.1)
    x = make_batch(tiny, b_u=6).x_u
    latents = evaluate.guide_latents(pair, x)
    posterior = _posterior_by_hand(pair, x, latents)
    assert posterior.max() < 0.95 and posterior.min() > 0.001  # not degenerate
    map_labels = evaluate.posterior_labels(pair, x, temperature=0, latents=latents)
    assert torch.equal(map_labels, posterior.argmax(-1))
    draws = 4000  # tile the batch: every copy has the same x and z
    tiled = {name: value.repeat(draws, 1) for name, value in latents.items()}
    labels = evaluate.posterior_labels(pair, x.repeat(draws, 1), temperature=1, latents=tiled)
    frequencies = one_hot(labels.reshape(draws, len(x)), 10).mean(0)  # (B, K)
    error = (posterior * (1 - posterior) / draws).sqrt()
    assert float(((frequencies - posterior).abs() / error).max()) < 4.5


def test_posterior_labels_of_a_model_without_a_discrete_y_are_refused(tiny):
    pair, _ = small_pair(model="dirichlet", inference="reparam")
    with pytest.raises(ValueError, match="no discrete latent y"):
        evaluate.posterior_labels(pair, tiny.valid.x[:4])


@pytest.mark.parametrize(("inference", "jit_class"), [
    ("enum", "JitTraceEnum_ELBO"), ("gumbel", "JitTrace_ELBO"), ("score", "JitTrace_ELBO")])
def test_pyros_jit_elbos_train_the_pair(tiny, inference, jit_class):
    """``--jit`` compiles the ELBO with Pyro's JIT: once compiled, a step on the same
    draws gives the loss and gradients of the uncompiled ELBO (batch norm and dropout
    on), and training lowers the loss."""
    kwargs = dict(inference=inference, batch_norm=True, input_dropout=0.2)
    jitted, _ = small_pair(jit=True, **kwargs)
    plain, _ = small_pair(**kwargs)
    plain.load_state_dict(jitted.state_dict())
    assert type(jitted.elbo).__name__ == jit_class
    batch = make_batch(tiny)
    jitted.loss_and_grads(batch)  # compiles
    jitted.zero_grad()
    for seed in (7, 8):
        losses, grads = [], []
        for pair in (jitted, plain):
            pyro.set_rng_seed(seed)
            losses.append(pair.loss_and_grads(batch)["loss"])
            grads.append([p.grad.clone() for p in pair.parameters() if p.grad is not None])
            pair.zero_grad()
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        largest = max(float(g.abs().max()) for g in grads[1])
        for g_jit, g_plain in zip(*grads, strict=True):
            # float32 sums of terms of order 1e5 in another order; a bias before batch
            # norm has a gradient that is 0 up to rounding
            atol = max(1e-4 * float(g_plain.abs().max()), 1e-6 * largest)
            torch.testing.assert_close(g_jit, g_plain, rtol=1e-3, atol=atol)
    optimizer = torch.optim.Adam(jitted.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        losses.append(jitted.loss_and_grads(make_batch(tiny, seed=step), step)["loss"])
        optimizer.step()
        optimizer.zero_grad()
    assert sum(losses[-5:]) < sum(losses[:5])
    assert math.isfinite(jitted.loss(batch))  # evaluation, without gradients, runs uncompiled


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"inference": "tracegraph"}, "TraceGraph_ELBO"), ({"inference": "iwae"}, "ImportanceWeighted"),
    ({"inference": "gumbel-cat-kl"}, "TraceMeanField_ELBO"),
    ({"inference": "gumbel", "temperature_decay": 1e-3}, "--temperature-decay")])
def test_jit_refuses_what_it_cannot_compile_in_one_line(changes, phrase):
    with pytest.raises(UnsupportedError, match=phrase):
        resolve(small_settings(jit=True, **changes))


def test_pyros_svi_with_the_pairs_objective_trains_what_the_cli_trains(tiny, recwarn):
    """50 steps of SVI(pair.model, pair.guide, Adam, loss=pair.objective) and 50 of the
    training loop's step (pair.loss_and_grads and torch's Adam) from the same start and
    the same draws: the same losses, the same parameters. With a bare TraceEnum_ELBO the
    classifier never sees a label, and ends elsewhere."""
    from ppl_ssvae.train import adam

    batches = [make_batch(tiny, b_u=16, b_l=8, seed=s) for s in range(50)]

    def fresh():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        pair, _ = small_pair()
        return pair

    pair = fresh()
    optimizer = adam(pair.parameters(), 1e-2)
    loop = []
    for step, batch in enumerate(batches):
        loop.append(pair.loss_and_grads(batch, step)["loss"] * batch.size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    by_loop = {name: p.detach().clone() for name, p in pair.named_parameters()}

    pair = fresh()
    svi = SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-2}), loss=pair.objective)
    by_svi = [svi.step(batch) for batch in batches]
    assert by_svi == pytest.approx(loop, rel=1e-3)
    for name, p in pair.named_parameters():
        torch.testing.assert_close(p.detach(), by_loop[name], rtol=1e-3, atol=1e-4)
    assert not [w for w in recwarn if "invalid dependency" in str(w.message)]

    pair = fresh()
    svi = SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-2}),
              TraceEnum_ELBO(max_plate_nesting=1))
    for batch in batches:
        svi.step(batch)
    classifier = dict(pair.named_parameters())
    moved = max(float((classifier[name] - by_loop[name]).abs().max())
                for name in by_loop if name.startswith("guide.classifier"))
    assert moved > 1e-2
