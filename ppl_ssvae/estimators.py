"""Unbiased gradient estimators for a discrete label that evaluate the ELBO's terms at
a few chosen labels per image: sum-and-sample, RLOO and the unordered set estimator.

For an unlabelled image, with q = q(y | x) and everything else of the ELBO in f::

    ELBO(x) = sum_y q(y) f(y) + H(q),
    f(y)    = E_{q(z|x,y)} [ log p(x, z, y) - log q(z | x, y) ]   (other latents alike)

The exact sum (``enum``) evaluates f at all K labels. The estimators here evaluate it at
m chosen labels (m decoder passes instead of K), each with its own draw of z; the
entropy H(q) is exact (it costs nothing); the gradient of f's parameters is pathwise
(z is reparameterised) and q's is a score-function term with a baseline:

- ``SumAndSample(k)`` (Liu et al. 2019): the k most probable labels summed exactly, one
  label drawn from q restricted to the rest; its score term is baselined by the summed
  labels' mean f. k + 1 passes; exact at k = K.
- ``RLOO(S)`` (Kool et al. 2019): S labels drawn from q, each one's signal baselined
  by the mean f of the other S - 1. S passes.
- ``UnorderedSet(S)`` (Kool et al. 2020): S distinct labels drawn without replacement
  (Gumbel-top-k), weighed by q(s) times the leave-one-out ratio R(S, s), with the
  estimator's built-in baseline. S passes; exact at S = K.

The labels are set on the guide's unobserved discrete site (``ppl_ssvae.terms``'s
label site) in a dimension left of the data plate, as Pyro's parallel enumeration
does: every later site of that plate (z, x, ...) gets that dimension by broadcasting,
so one call of the model and the guide evaluates all m labels. The labelled plate and
any site upstream of the label are left as they are. The model and the guide are the
plain pair: nothing in them knows which estimator runs.

An estimator is a subclass of ``LabelEstimator`` with two methods: ``choose`` (which
labels to evaluate) and ``combine`` (the ELBO's estimate and the surrogate whose
gradient is the estimator's). docs/extending.md walks through writing one.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from torch.distributions.utils import logits_to_probs

from ppl_ssvae.terms import PlateTerms, is_label_site, per_example_terms, traces

LABEL_DIM = -2  # the labels' dimension: left of the one data plate (max_plate_nesting = 1)


def score(log_q: torch.Tensor) -> torch.Tensor:
    """Zero in value, ``grad log_q`` in gradient: ``signal * score(log_q)`` adds a
    score-function term to a surrogate without changing its value."""
    return log_q - log_q.detach()


class _SetLabels(Messenger):
    """Sets the value of every unobserved discrete site to the labels ``choose`` picks
    from its logits: a tensor (m, B) of class indices."""

    def __init__(self, choose):
        super().__init__()
        self.choose = choose

    def _pyro_sample(self, msg: dict) -> None:
        if not is_label_site(msg):
            return
        logits = msg["fn"].logits  # normalised: log q(y | x), (B, K)
        with torch.no_grad():
            msg["value"] = self.choose(logits.detach())
        msg["done"] = True


class LabelEstimator(ELBO):
    """The ELBO of a pair whose guide draws one discrete label per image (per data plate),
    estimated by evaluating it at the labels ``choose`` picks. Plates without an
    unobserved label (the labelled images) contribute their single-sample ELBO.

    Args:
        samples: the estimator's own count (k, S: ``--samples``), checked by ``check``.
        **kwargs: Pyro's ``ELBO`` options; ``max_plate_nesting`` must be 1 (the labels
            take dimension -2).

    Raises:
        ValueError: ``samples`` out of the estimator's range, or another plate nesting.
    """

    samples_name = "samples"  # what --samples counts for this estimator

    def __init__(self, samples: int, **kwargs):
        kwargs.setdefault("max_plate_nesting", 1)
        super().__init__(**kwargs)
        if self.max_plate_nesting != 1:
            raise ValueError("label estimators place the labels at dim -2: max_plate_nesting "
                             "must be 1")
        self.samples = samples
        self.check(samples)

    def check(self, samples: int) -> None:
        if samples < 1:
            raise ValueError(f"{type(self).__name__} needs --samples of at least 1")

    # what a subclass writes -------------------------------------------------------------
    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The labels to evaluate for each image: class indices, shape (m, B)."""
        raise NotImplementedError

    def combine(self, f: torch.Tensor, labels: torch.Tensor, log_q: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` (m, B): the ELBO's terms other than log q(y) at each chosen label;
        ``labels`` (m, B) those labels; ``log_q`` (B, K) log q(y | x). Returns the estimate
        of sum_y q(y) f(y) per image (B,) and a surrogate (B,) whose gradient is the
        estimator's (its value need not be the estimate's)."""
        raise NotImplementedError

    # the machinery -------------------------------------------------------------------------
    def _get_trace(self, model, guide, args, kwargs):
        return traces(model, guide, args, kwargs, _SetLabels(self.choose))

    def _plate_elbo(self, plate: PlateTerms) -> tuple[torch.Tensor, torch.Tensor]:
        """(estimate, surrogate) of one plate's ELBO, scaled to the whole set."""
        f = plate.log_p - plate.log_q
        if not plate.labels:
            return plate.scale * f.sum(), plate.scale * f.sum()
        if len(plate.labels) > 1:
            raise NotImplementedError(
                f"{type(self).__name__} handles one discrete label per example; plate "
                f"{plate.name!r} has {', '.join(label.name for label in plate.labels)}")
        label = plate.labels[0]
        log_q = label.fn.logits  # (B, K), normalised
        entropy = -(logits_to_probs(log_q) * log_q).sum(-1)
        labels = label.value.expand(f.shape)
        estimate, surrogate = self.combine(f, labels, log_q)
        return (plate.scale * (estimate + entropy).sum(),
                plate.scale * (surrogate + entropy).sum())

    def _elbo(self, model, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        estimate = surrogate = torch.zeros(())
        for plate in per_example_terms(model_trace, guide_trace).values():
            e, s = self._plate_elbo(plate)
            estimate, surrogate = estimate + e, surrogate + s
        return estimate, surrogate

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(-self._elbo(model, guide, args, kwargs)[0])

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative surrogate: its gradient is the estimator's (its value is not
        always the loss)."""
        return -self._elbo(model, guide, args, kwargs)[1]

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        estimate, surrogate = self._elbo(model, guide, args, kwargs)
        if surrogate.requires_grad:
            (-surrogate).backward(retain_graph=self.retain_graph)
        return float(-estimate.detach())


def _gather(log_q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log q at ``labels`` (m, B), from ``log_q`` (B, K)."""
    return log_q.gather(-1, labels.transpose(0, 1)).transpose(0, 1)


class SumAndSample(LabelEstimator):
    """The k most probable labels of q summed exactly, one drawn from the rest (Liu,
    Regier, Tripuraneni, Jordan and McAuliffe 2019): k + 1 decoder passes, unbiased::

        sum_y q(y) f(y) = sum_{y in C} q(y) f(y) + (1 - q(C)) E_{y ~ q(. | not C)} f(y)

    the expectation over the rest estimated by one draw, its score term baselined by
    the q-weighted mean f of the summed labels (independent of the draw). k >= K - 1
    is the exact sum."""

    samples_name = "k, the labels summed"

    def check(self, samples: int) -> None:
        if samples < 0:
            raise ValueError("sum-and-sample needs --samples (k, the labels summed) of at least 0")

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.samples, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices  # (B, k)
        if k == logits.shape[-1]:
            return top.transpose(0, 1)
        rest = logits.scatter(-1, top, -math.inf)
        drawn = torch.distributions.Categorical(logits=rest).sample()
        return torch.cat([top.transpose(0, 1), drawn.unsqueeze(0)])

    def combine(self, f, labels, log_q):
        num_classes = log_q.shape[-1]
        k = min(self.samples, num_classes)
        q_top = _gather(log_q, labels[:k]).exp()  # (k, B)
        summed = (q_top * f[:k]).sum(0)
        if k == num_classes:
            return summed, summed
        # log q(not C), from the logits of the rest: no cancellation when q(C) is near 1
        log_rest = log_q.scatter(-1, labels[:k].transpose(0, 1), -math.inf).logsumexp(-1)
        rest, f_drawn = log_rest.exp(), f[k]
        baseline = (summed / q_top.sum(0)).detach() if k else 0.0
        log_q_drawn = _gather(log_q, labels[k:]).squeeze(0) - log_rest  # q(y | not C)
        estimate = summed + rest * f_drawn
        signal = (rest * (f_drawn - baseline)).detach()
        return estimate, estimate + signal * score(log_q_drawn)


class RLOO(LabelEstimator):
    """S labels drawn from q, each one's score term baselined by the mean f of the
    other S - 1 (Kool, van Hoof and Welling 2019, "Buy 4 REINFORCE samples, get a
    baseline for free!"): S decoder passes, unbiased."""

    samples_name = "S, the labels drawn"

    def check(self, samples: int) -> None:
        if samples < 2:
            raise ValueError("rloo needs --samples (S, the labels drawn) of at least 2: "
                             "each label's baseline is the mean of the others")

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(logits=logits).sample((self.samples,))

    def baseline(self, f: torch.Tensor) -> torch.Tensor:
        """Each label's baseline: the mean f of the others."""
        return (f.sum(0, keepdim=True) - f) / (len(f) - 1)

    def combine(self, f, labels, log_q):
        estimate = f.mean(0)
        signal = (f - self.baseline(f)).detach()
        return estimate, estimate + (signal * score(_gather(log_q, labels))).mean(0)


class UnorderedSet(LabelEstimator):
    """S distinct labels drawn without replacement (Gumbel-top-k), the unordered set
    estimator with its built-in baseline (Kool, van Hoof and Welling 2020)::

        sum_y q(y) f(y) ~= sum_{s in S} q(s) R(S, s) f(s),
        R(S, s) = P^{D-s}(S - s) / P(S)

    P(S) the probability of drawing the set S in any order; the score term of s is
    baselined by sum_{s'} q(s') R^{D-s}(S, s') f(s'). S decoder passes; unbiased;
    exact at S = K. The set probabilities are integrals (``log_set_probabilities``)."""

    samples_name = "S, the labels drawn without replacement"

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        s = min(self.samples, logits.shape[-1])
        gumbel = -torch.empty_like(logits).exponential_().log()
        return (logits + gumbel).topk(s, dim=-1).indices.transpose(0, 1)

    def combine(self, f, labels, log_q):
        log_q_set = _gather(log_q, labels)  # (S, B)
        log_p_set, log_p_without, log_p_without_two = log_set_probabilities(log_q_set.detach())
        # q(s) R(S, s): the weight of each drawn label
        weight = (log_q_set.detach() + log_p_without - log_p_set).exp()  # (S, B)
        estimate = (weight * f).sum(0)
        # baseline of s: sum_{s'} q(s') R^{D-s}(S, s') f(s'); R^{D-s}(S, s) = 1
        ratio = (log_p_without_two - log_p_without.unsqueeze(1)).exp()  # (S, S', B)
        eye = torch.eye(len(f), dtype=torch.bool, device=f.device).unsqueeze(-1)
        ratio = torch.where(eye, torch.ones_like(ratio), ratio)
        baseline = (log_q_set.detach().exp().unsqueeze(0) * ratio * f.detach().unsqueeze(0)).sum(1)
        signal = (weight * (f - baseline)).detach()
        return estimate, estimate + (signal * score(log_q_set)).sum(0)


INTEGRATION_POINTS = 256  # error below 1e-5 in log P against exact sums over orders


def log_set_probabilities(log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For sets S of distinct labels (``log_p``: (S, B), the log-probabilities of each
    set's members), the log-probabilities of drawing them without replacement, in any
    order: log P(S) (B,), log P^{D-s}(S - s) (S, B) and log P^{D-s-s'}(S - s - s')
    (S, S', B), where P^{D-s} draws from the distribution with s left out, renormalised.

    With a_i = p_i / p(not S), P(S) = int_0^1 prod_{i in S} (1 - u^{a_i}) du (the
    members' Gumbel-perturbed log-probabilities all above the rest's maximum), and
    leaving members out of S (and out of D) only drops their factors. The integral is
    taken in t = log(-log u), u = exp(-e^t), on a grid, in float64 and in log space.

    Args:
        log_p: (S, B) log-probabilities of the S members of each of B sets.

    Returns:
        (log P(S), log P^{D-s}(S - s), log P^{D-s-s'}(S - s - s')), shaped (B,), (S, B)
        and (S, S', B), in ``log_p``'s dtype. The diagonal of the last is not meaningful.
    """
    dtype = log_p.dtype
    log_p = log_p.double()
    log_set = log_p.logsumexp(0)
    log_rest = torch.log(-torch.expm1(log_set.clamp(max=0.0)))  # -inf when S is all of D
    log_a = log_p - log_rest  # (S, B); +inf when S is all of D
    finite = torch.where(torch.isfinite(log_a), log_a, torch.zeros_like(log_a))
    low = min(-35.0, -float(finite.max()) - 35.0)
    t = torch.linspace(low, 4.0, INTEGRATION_POINTS, dtype=torch.float64, device=log_p.device)
    dt = (4.0 - low) / (INTEGRATION_POINTS - 1)
    x = (log_a.unsqueeze(-1) + t).exp()  # a_i e^t: (S, B, T)
    factor = torch.where(x < 0.6931, torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))
    base = t - t.exp()  # log of the measure exp(t - e^t) dt
    whole = factor.sum(0)  # (B, T)
    log_p_set = (base + whole).logsumexp(-1) + math.log(dt)
    without = whole.unsqueeze(0) - factor  # (S, B, T)
    log_p_without = (base + without).logsumexp(-1) + math.log(dt)
    without_two = without.unsqueeze(1) - factor.unsqueeze(0)  # (S, S', B, T)
    log_p_without_two = (base + without_two).logsumexp(-1) + math.log(dt)
    return log_p_set.to(dtype), log_p_without.to(dtype), log_p_without_two.to(dtype)
