"""Shared fixtures: tiny data and small pairs, so most tests run in milliseconds."""

from __future__ import annotations

import pyro
import pytest
import torch

from ppl_ssvae import MODELS, Batch, Settings, build
from ppl_ssvae.data import Dataset, synthetic

# The tests' tensors are tiny: a second intra-op thread only adds synchronisation,
# which on a busy two-core machine made some tests twenty times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_rng():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    """MNIST-shaped synthetic data: 2,000 / 500 / 500 images, 10 learnable classes."""
    return synthetic(seed=0)


def small_settings(**changes) -> Settings:
    """A small, deterministic network configuration for fast tests: no dropout and no
    batch norm, so a hand computation on the same networks sees the same function."""
    base = Settings(hidden=(32,), z_dim=4, activation="softplus", batch_norm=False,
                    input_dropout=0.0, classifier_weight=0.1, dataset="synthetic", progress=False)
    return base.replace(**changes)


def make_batch(data: Dataset, b_u: int = 8, b_l: int = 6, n_u: int | None = 1000,
               n_l: int | None = 20, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx_u = torch.randperm(len(data.train), generator=g)[:b_u]
    idx_l = torch.randint(len(data.train), (b_l,), generator=g)
    x_u = (torch.rand(b_u, 784, generator=g) < data.train.x[idx_u]).float()
    x_l = (torch.rand(b_l, 784, generator=g) < data.train.x[idx_l]).float()
    return Batch(x_u=x_u, x_l=x_l, y_l=data.train.y[idx_l],
                 n_u=n_u, n_l=n_l, idx_u=idx_u, idx_l=idx_l)


def data_shape(model: str) -> tuple[int, int]:
    """(K, x_dim) of a data set ``model`` builds on: (10, 784) for most, (100, 1568) for
    a model whose classes are pairs of digits (``ModelSpec.example_data``)."""
    return MODELS[model].example_data


def examples(model: str, b_u: int = 8, b_l: int = 6, seed: int = 0) -> Batch:
    """Random binary images of ``model``'s data shape, unlabelled and labelled, standing
    for sets of 1,000 and 20."""
    k, x_dim = data_shape(model)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b_u + b_l, x_dim, generator=g) < 0.3).to(torch.get_default_dtype())
    return Batch(x_u=x[:b_u], x_l=x[b_u:], y_l=torch.randint(k, (b_l,), generator=g),
                 n_u=1000, n_l=20)


def small_pair(**changes):
    """A small pair of ``changes["model"]`` (default m2), built for its data shape."""
    settings = small_settings(**changes)
    return build(settings, *data_shape(settings.model)), settings


def assert_enumerated_gradients_match(pair, batch, hand_negative_elbo, seed: int = 2) -> None:
    """The gradients of TraceEnum_ELBO on ``batch`` equal those of the hand-written
    negative ELBO on the same networks and the same draws (seeded alike). float32 sums of
    terms of order 1e5: each parameter compared relative to its gradient's scale."""
    from pyro.infer import TraceEnum_ELBO

    pyro.set_rng_seed(seed)
    TraceEnum_ELBO(max_plate_nesting=1).loss_and_grads(pair.model, pair.guide, batch)
    by_pyro = [p.grad.clone() for p in pair.parameters()]
    pair.zero_grad()
    pyro.set_rng_seed(seed)
    hand_negative_elbo(pair.model, pair.guide, batch).backward()
    for g_pyro, p in zip(by_pyro, pair.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(g_pyro, p.grad, rtol=1e-3, atol=1e-4 * scale)
