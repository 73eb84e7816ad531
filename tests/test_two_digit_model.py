"""The two-digit model (models/two_digit.py, guides/two_digit.py) and its supervised
baseline: the Pyro ELBO equals a hand-written sum over the 100 pairs of digits, values
and gradients, on the same networks and the same draws; a class is its two digits
everywhere (classifier term, prediction, posterior labels, sampling); it trains from
the command line on two-digit images."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch.nn import functional as F

from conftest import assert_enumerated_gradients_match, examples, small_pair
from ppl_ssvae import Batch, evaluate
from ppl_ssvae.labels import join_label, label_sites, split_label


def normal_log_prob(x, loc, scale):
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def two_digit_negative_elbo(model, guide, batch: Batch, draw=torch.randn) -> torch.Tensor:
    """-(ELBO_U + ELBO_L), the 100 pairs summed one by one. For an unlabelled image::

        ELBO(x) = sum_a sum_b q(a|x) q(b|x) [ log p(x|a,b,z_ab) + log p(a) + log p(b)
                                              + log p(z_ab) - log q(z_ab|x,a,b) ]
                  - sum_a q(a|x) log q(a|x) - sum_b q(b|x) log q(b|x)

    z_ab = mu(x, a, b) + sigma(x, a, b) * eps_ab; a labelled image's ELBO is the bracket
    at its digits (c // 10, c % 10). The noise comes from ``draw`` in the order and shape
    the guide draws it under parallel enumeration: (10, 10, B, D) for the unlabelled
    images, indexed [b, a] (Pyro gives y1 the dimension -2, y2 the dimension -3), then
    (B, D) for the labelled ones."""
    total = torch.zeros(())

    def bracket(x, a, b, eps):
        loc, scale = guide.encoder(x, a, b)
        z = loc + scale * eps
        logits = model.decoder(z, a, b)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return (log_px + 2 * math.log(1 / 10) + normal_log_prob(z, torch.zeros_like(z),
                                                                  torch.ones_like(z))
                - normal_log_prob(z, loc, scale))

    if batch.x_u is not None:
        x = batch.x_u
        eps = draw(10, 10, len(x), model.z_dim)
        logits1, logits2 = guide.classify_digits(x)
        log_q1, log_q2 = logits1.log_softmax(-1), logits2.log_softmax(-1)
        elbo = -(log_q1.exp() * log_q1).sum(-1) - (log_q2.exp() * log_q2).sum(-1)
        for a in range(10):
            for b in range(10):
                digit = lambda d: torch.full((len(x),), d)  # noqa: E731
                weight = (log_q1[:, a] + log_q2[:, b]).exp()
                elbo = elbo + weight * bracket(x, digit(a), digit(b), eps[b, a])
        total = total - batch.n_u / len(x) * elbo.sum()
    if batch.x_l is not None:
        x = batch.x_l
        elbo = bracket(x, batch.y_l // 10, batch.y_l % 10, draw(len(x), model.z_dim))
        total = total - batch.n_l / len(x) * elbo.sum()
    return total


def parts(batch: Batch, part: str) -> Batch:
    return Batch(x_u=batch.x_u if part != "labelled" else None, n_u=batch.n_u,
                 x_l=batch.x_l if part != "unlabelled" else None,
                 y_l=batch.y_l if part != "unlabelled" else None, n_l=batch.n_l)


@pytest.mark.parametrize("part", ["unlabelled", "labelled", "both"])
def test_two_digit_elbo_equals_the_hand_sum_over_the_100_pairs(part):
    pair, _ = small_pair(model="two-digit")
    batch = parts(examples("two-digit", b_u=5, b_l=4), part)
    pyro.set_rng_seed(1)
    by_pyro = TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        by_hand = float(two_digit_negative_elbo(pair.model, pair.guide, batch))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_two_digit_gradients_match_the_hand_sum():
    pair, _ = small_pair(model="two-digit")
    batch = examples("two-digit", b_u=5, b_l=4)
    assert_enumerated_gradients_match(pair, batch, two_digit_negative_elbo)


def test_a_class_is_its_two_digits():
    pair, _ = small_pair(model="two-digit")
    assert label_sites(pair.model) == ("y1", "y2")
    c = torch.tensor([0, 7, 40, 99, 58])
    digits = split_label(pair.model, c)
    assert digits["y1"].tolist() == [0, 0, 4, 9, 5] and digits["y2"].tolist() == [0, 7, 0, 9, 8]
    assert torch.equal(join_label(pair.model, digits), c)
    # the labelled plate observes the two digits of the class
    batch = examples("two-digit")
    trace = pyro.poutine.trace(pair.model).get_trace(batch)
    assert torch.equal(trace.nodes["labelled/y1"]["value"], batch.y_l // 10)
    assert torch.equal(trace.nodes["labelled/y2"]["value"], batch.y_l % 10)
    assert trace.nodes["labelled/y1"]["is_observed"] and not trace.nodes["unlabelled/y1"][
        "is_observed"]


def test_classify_is_the_joint_of_the_two_digits_and_the_classifier_term_their_sum():
    pair, _ = small_pair(model="two-digit", classifier_weight=0.5)
    batch = examples("two-digit")
    with torch.no_grad():
        logits1, logits2 = pair.guide.classify_digits(batch.x_l)
        joint = pair.guide.classify(batch.x_l)
        assert joint.shape == (len(batch.x_l), 100)
        torch.testing.assert_close(joint.logsumexp(-1), torch.zeros(len(batch.x_l)))
        # the argmax of the joint is the pair of the two digits' argmaxes
        assert torch.equal(joint.argmax(-1), 10 * logits1.argmax(-1) + logits2.argmax(-1))
        cross_entropies = (F.cross_entropy(logits1, batch.y_l // 10, reduction="sum")
                           + F.cross_entropy(logits2, batch.y_l % 10, reduction="sum"))
        alpha = 0.5 * batch.n_u
        expected = alpha * batch.n_l / len(batch.x_l) * cross_entropies
        torch.testing.assert_close(pair.classifier_loss(batch), expected)


def test_posterior_labels_and_latents_read_the_declared_sites():
    pair, _ = small_pair(model="two-digit")
    x = examples("two-digit", b_u=6).x_u
    latents = evaluate.guide_latents(pair, x)
    assert set(latents) == {"unlabelled/z"}  # y1 and y2 left out: label sites
    labels = evaluate.posterior_labels(pair, x, latents=latents)
    assert labels.shape == (6,) and 0 <= int(labels.min()) and int(labels.max()) < 100
    assert evaluate.predict(pair, x).shape == (6, 100)
    assert evaluate.kl_per_dimension(pair, x).shape == (pair.model.z_dim,)
    log_px = evaluate.log_marginal(pair, x, samples=2)
    assert log_px.shape == (6,) and bool(torch.isfinite(log_px).all())


def test_decode_reads_a_class_index_and_its_one_hot_alike():
    pair, _ = small_pair(model="two-digit")
    z = torch.randn(3, pair.model.z_dim)
    c = torch.tensor([47, 3, 90])
    with torch.no_grad():
        torch.testing.assert_close(pair.model.decode(z, c),
                                   pair.model.decode(z, F.one_hot(c, 100).float()))


def test_the_supervised_baseline_is_two_heads_by_maximum_likelihood():
    pair, _ = small_pair(model="two-digit-mlp", inference="ml")
    batch = examples("two-digit")
    loss = Trace_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    with torch.no_grad():
        log_q = pair.classify(batch.x_l).log_softmax(-1)
    nll = -float(log_q.gather(-1, batch.y_l[:, None]).sum()) * batch.n_l / len(batch.x_l)
    assert loss == pytest.approx(nll, rel=1e-5)
    assert label_sites(pair.model) == ("y1", "y2")
