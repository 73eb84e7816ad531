"""The ELBO Pyro computes for the M2 pair equals the closed-form sum over the K
labels written by hand in plain PyTorch, on the same networks and the same z."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from conftest import assert_enumerated_gradients_match, make_batch, small_pair
from ppl_ssvae import Batch
from ppl_ssvae.nets import one_dropout_mask
from ppl_ssvae.reference import m2_negative_elbo


def pyro_and_hand(pair, batch, seed=1):
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    by_pyro = elbo.loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        by_hand = float(m2_negative_elbo(pair.model, pair.guide, batch))
    return by_pyro, by_hand


@pytest.mark.parametrize("part", ["unlabelled", "labelled", "both"])
def test_enumerated_elbo_equals_hand_sum(tiny, part):
    pair, _ = small_pair()
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u if part != "labelled" else None, n_u=full.n_u,
                  x_l=full.x_l if part != "unlabelled" else None,
                  y_l=full.y_l if part != "unlabelled" else None, n_l=full.n_l)
    by_pyro, by_hand = pyro_and_hand(pair, batch)
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_sequential_enumeration_gives_the_same_elbo(tiny):
    pair, _ = small_pair(inference="enum-seq")
    batch = make_batch(tiny, b_l=0, n_l=None)
    batch = Batch(x_u=batch.x_u, n_u=batch.n_u)
    # sequential enumeration runs the guide once per value of y, drawing z as (B, D)
    # each time; Pyro's queue visits the values last first
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(3)
    by_pyro = elbo.loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(3)
    eps = torch.stack([torch.randn(len(batch.x_u), pair.model.z_dim) for _ in range(10)])
    with torch.no_grad():
        by_hand = float(m2_negative_elbo(pair.model, pair.guide, batch, eps_u=eps.flip(0)))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_gradients_match_the_hand_sum(tiny):
    pair, _ = small_pair()
    batch = make_batch(tiny)
    assert_enumerated_gradients_match(pair, batch, m2_negative_elbo)


def test_plate_scaling_is_the_full_data_objective(tiny):
    """Doubling the size a batch stands for doubles that part's contribution: the
    loss is n/B times the batch sum, an unbiased estimate of the full-data sum."""
    pair, _ = small_pair()
    full = make_batch(tiny)
    unscaled = Batch(x_u=full.x_u, x_l=full.x_l, y_l=full.y_l)  # n = batch sizes
    scaled = Batch(x_u=full.x_u, x_l=full.x_l, y_l=full.y_l, n_u=5 * len(full.x_u),
                   n_l=3 * len(full.x_l))
    only_u = Batch(x_u=full.x_u)
    only_l = Batch(x_l=full.x_l, y_l=full.y_l)
    loss = {}
    for name, batch in [("unscaled", unscaled), ("scaled", scaled), ("u", only_u), ("l", only_l)]:
        loss[name], _ = pyro_and_hand(pair, batch, seed=4)
    # the labelled z draws come after the unlabelled ones: reseed per part
    pyro.set_rng_seed(4)
    with torch.no_grad():
        u_in_both = float(m2_negative_elbo(pair.model, pair.guide, only_u))
    l_in_both = loss["unscaled"] - u_in_both
    assert loss["unscaled"] == pytest.approx(u_in_both + l_in_both)
    assert loss["scaled"] == pytest.approx(5 * u_in_both + 3 * l_in_both, rel=1e-5)
    weighed = Batch(x_u=full.x_u, x_l=full.x_l, y_l=full.y_l, labelled_weight=7.0)
    by_pyro, by_hand = pyro_and_hand(pair, weighed, seed=4)
    assert by_pyro == pytest.approx(u_in_both + 7 * l_in_both, rel=1e-5)  # --labelled-weight 7
    assert by_hand == pytest.approx(by_pyro, rel=1e-5)


def test_objective_adds_the_classifier_term(tiny):
    pair, settings = small_pair(classifier_weight=0.5)
    batch = make_batch(tiny)
    pyro.set_rng_seed(5)
    terms = pair.loss_and_grads(batch)
    log_q = torch.log_softmax(pair.classify(batch.x_l), -1)
    nll = float(-log_q.gather(-1, batch.y_l[:, None]).sum())
    expected = 0.5 * batch.n_u * (batch.n_l / len(batch.x_l)) * nll
    assert terms["classifier"] * batch.size == pytest.approx(expected, rel=1e-5)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        hand = float(m2_negative_elbo(pair.model, pair.guide, batch))
    assert terms["negative_elbo"] * batch.size == pytest.approx(hand, rel=1e-5)


def gaussian_batch(data, seed=0):
    """Real-valued features (outside [0, 1]) for the Gaussian likelihood."""
    batch = make_batch(data, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return Batch(x_u=3 * torch.randn(batch.x_u.shape, generator=g) - 1, n_u=batch.n_u,
                 x_l=3 * torch.randn(batch.x_l.shape, generator=g) - 1, y_l=batch.y_l,
                 n_l=batch.n_l)


def test_gaussian_likelihood_elbo_equals_hand_sum(tiny):
    pair, _ = small_pair(likelihood="gaussian", binarize=False)
    with torch.no_grad():  # per-feature scales away from their start, so sigma matters
        pair.model.likelihood.raw_scale.copy_(torch.linspace(-2.0, 2.0, 784))
    batch = gaussian_batch(tiny)
    by_pyro, by_hand = pyro_and_hand(pair, batch)
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)
    # the hand sum, spelled out for one labelled image at its z: log N(x | mean, sigma^2)
    sigma = torch.nn.functional.softplus(torch.linspace(-2.0, 2.0, 784)) + 1e-3
    mean = torch.zeros(784)
    x = batch.x_l[0]
    expected = (-0.5 * ((x - mean) / sigma) ** 2 - sigma.log() - 0.5 * math.log(2 * math.pi)).sum()
    got = pair.model.likelihood(mean).log_prob(x)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # and the gradients, the learned variance included
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(2)
    elbo.loss_and_grads(pair.model, pair.guide, batch)
    by_pyro_grads = [p.grad.clone() for p in pair.parameters()]
    pair.zero_grad()
    pyro.set_rng_seed(2)
    m2_negative_elbo(pair.model, pair.guide, batch).backward()
    for g_pyro, p in zip(by_pyro_grads, pair.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(g_pyro, p.grad, rtol=1e-3, atol=1e-4 * scale)
    assert float(pair.model.likelihood.raw_scale.grad.abs().sum()) > 0


def test_the_labelled_weight_travels_from_the_settings_to_the_plates(tiny):
    from ppl_ssvae.train import draw_batch

    _, settings = small_pair(labelled_weight=500.0)
    labelled = torch.arange(20)
    g = torch.Generator().manual_seed(0)
    batch = draw_batch(tiny, labelled, settings, torch.randperm(len(tiny.train), generator=g), 0, g)
    assert batch.labelled_weight == 500.0
    rebuilt = Batch.from_arguments(*batch.as_arguments()[0], **batch.as_arguments()[1])  # the JIT's
    assert rebuilt.labelled_weight == 500.0
    trace = pyro.poutine.trace(small_pair()[0].guide).get_trace(batch)
    scales = {name.split("/")[0]: site["scale"] for name, site in trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"] and "/" in name}
    assert scales["labelled"] == pytest.approx(500.0 * len(labelled) / len(batch.x_l))
    assert scales["unlabelled"] == pytest.approx(len(tiny.train) / len(batch.x_u))


def test_sequential_enumeration_under_dropout_sums_over_one_mask(tiny):
    """Under input dropout, enum-seq's K runs of the guide drop the same pixels (the
    step's one mask): its ELBO is the hand sum over y computed under that mask. Each run
    drawing its own mask, as Pyro alone does, gives another value."""
    pair, _ = small_pair(inference="enum-seq", input_dropout=0.5)
    pair.train()
    batch = make_batch(tiny)
    batch = Batch(x_u=batch.x_u, n_u=batch.n_u)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)

    def hand(seed):
        pyro.set_rng_seed(seed)
        eps = torch.stack([torch.randn(len(batch.x_u), pair.model.z_dim) for _ in range(10)])
        with torch.no_grad():
            return float(m2_negative_elbo(pair.model, pair.guide, batch, eps_u=eps.flip(0)))

    with one_dropout_mask():
        hand(0)  # draws the classifier's and the encoder's masks
        pyro.set_rng_seed(3)
        by_pyro = elbo.loss(pair.model, pair.guide, batch)
        by_hand = hand(3)
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)
    pyro.set_rng_seed(3)
    assert elbo.loss(pair.model, pair.guide, batch) != pytest.approx(by_hand, rel=1e-3)


def test_sequential_enumeration_is_as_noisy_as_parallel_under_dropout(tiny):
    """The training step of enum-seq shares one dropout mask across its runs of the
    guide, so its classifier gradient is as noisy as enum's; one mask per run (the pair
    told it does not rerun the guide) multiplies it (by about 50 here)."""
    batch = make_batch(tiny, b_u=20, b_l=10)

    def deviation(inference, shared=True):
        pyro.clear_param_store()
        torch.manual_seed(1)
        pair, _ = small_pair(inference=inference, input_dropout=0.25)
        pair.reruns_guide = pair.reruns_guide and shared
        grads = []
        for _ in range(40):
            pair.zero_grad(set_to_none=True)
            pair.loss_and_grads(batch)
            grads.append(torch.cat([p.grad.flatten() for p in pair.guide.classifier.parameters()]))
        return float(torch.stack(grads).var(0).sum().sqrt())

    parallel = deviation("enum")
    assert deviation("enum-seq") == pytest.approx(parallel, rel=0.15)
    assert deviation("enum-seq", shared=False) > 10 * parallel
