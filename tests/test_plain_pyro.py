"""Model and guide are plain Pyro callables: Pyro's own ``SVI`` and ``Predictive``
take them as they are, without ppl_ssvae's training loop or objective."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO

from conftest import make_batch, small_pair


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
    assert y.shape == (400, 5, 10) and torch.equal(y.sum(-1), torch.ones(400, 5))
    assert draws["labelled/z"].shape == (400, 3, pair.model.z_dim)
    with torch.no_grad():
        q_y = pair.guide.classify(batch.x_u).softmax(-1)
    assert q_y.max() > 0.5
    assert (y.mean(0) - q_y).abs().max() < 0.1  # 400 draws: the standard error is <= 0.025
