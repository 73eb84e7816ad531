"""One short learning run per family on real MNIST with 100 labels: each must
beat chance (10%) clearly. Small networks and 200 steps keep each run to a few
seconds; the accuracies of full runs are in the README."""

from __future__ import annotations

import pyro
import pytest
import torch

from conftest import small_settings
from ppl_ssvae import Batch, build, one_hot
from ppl_ssvae.data import DataError, balanced_labels, binarize, load_mnist

STEPS = 200
CHANCE = 0.1


@pytest.fixture(scope="module")
def mnist():
    try:
        return load_mnist(download=False)
    except DataError as e:
        pytest.skip(f"MNIST is not installed here: {e}")


@pytest.mark.parametrize(("model", "inference", "particles"), [
    ("m2", "enum", 1),             # exact sum over y
    ("m2", "tracegraph", 1),       # score function with a baseline
    ("m2", "gumbel", 1),           # continuous relaxation of y
    ("m2", "iwae", 2),             # importance-weighted bound
    ("logistic-normal-prior", "reparam", 1),
    ("dirichlet", "reparam", 1),
    ("mlp", "ml", 1),              # labelled images only
])
def test_a_short_run_beats_chance_clearly(mnist, model, inference, particles):
    pyro.set_rng_seed(0)
    settings = small_settings(model=model, inference=inference, particles=particles,
                              hidden=(64,), z_dim=8, dataset="mnist")
    pair = build(settings, 10, 784)
    optimizer = torch.optim.Adam(pair.parameters(), lr=3e-3)
    labelled = balanced_labels(mnist.train.y, 100, 10, seed=0)
    g = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        idx_u = torch.randint(len(mnist.train), (100,), generator=g)
        idx_l = labelled[torch.randint(len(labelled), (100,), generator=g)]
        batch = Batch(x_u=binarize(mnist.train.x[idx_u]), x_l=binarize(mnist.train.x[idx_l]),
                      y_l=one_hot(mnist.train.y[idx_l], 10), n_u=len(mnist.train),
                      n_l=len(labelled))
        pair.loss_and_grads(batch, step)
        optimizer.step()
        optimizer.zero_grad()
    pair.eval()
    with torch.no_grad():
        predicted = pair.classify(mnist.test.x[:2000]).argmax(-1)
    accuracy = float((predicted == mnist.test.y[:2000]).float().mean())
    assert accuracy > 4 * CHANCE, f"{model}/{inference}: test accuracy {accuracy:.3f}"
