"""Distributions on the simplex with reparameterised samples: continuous
relaxations of a one-hot y, so that y's gradient flows through the sample, and
the Dirichlet over class weights.

- ``Concrete``: the Gumbel-Softmax / Concrete distribution (Jang et al. 2017,
  Maddison et al. 2017), ``y = softmax((logits + g) / tau)`` with g standard Gumbel;
  ``ConcreteStraightThrough`` returns the one-hot argmax of that sample in the
  forward pass and the relaxed sample's gradient in the backward pass;
  ``CategoricalKLConcrete`` is scored against another by the categorical KL.
- ``LogisticNormalSimplex``: ``y = softmax((logits + eps) / tau)`` with eps ~ N(0, I_K).
- ``LogSpaceDirichlet``: the Dirichlet, sampled in log space (not a relaxation,
  but it meets the same underflow: small concentrations put alpha at the corners).

At a low temperature a relaxed sample has components that underflow to 0, where
``log y`` and hence the log-density are not finite. Every sample drawn here
therefore carries its own logarithm (computed as a log-softmax, which does not
underflow) in an attribute, and ``log_prob`` uses it when it is there, as Pyro's
straight-through distribution carries its soft sample. A value without it (an
exact one-hot, say) is scored by the plain formula: its relaxed log-density is
-inf or NaN, which is why an observed y is always scored under the exact
categorical instead.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints, kl_divergence, register_kl
from torch.distributions.utils import clamp_probs
from torch.nn import functional as F

LOG_ATTRIBUTE = "_log_value"
# Components below exp(LOG_FLUSH) ~ 1e-30 are stored as exact zeros: float32
# subnormals (below 1.2e-38) make a CPU's arithmetic many times slower, products
# with such small numbers become subnormal, and they carry nothing a network can
# use. Their logarithm is kept exactly.
LOG_FLUSH = -69.0


def with_log(log_y: torch.Tensor, value: torch.Tensor | None = None) -> torch.Tensor:
    """``value`` (default ``exp(log_y)``, flushed to 0 below ``exp(LOG_FLUSH)``)
    remembering ``log_y`` for ``log_of``."""
    if value is None:
        value = torch.where(log_y > LOG_FLUSH, log_y.exp(), torch.zeros_like(log_y))
    setattr(value, LOG_ATTRIBUTE, log_y)
    return value


def log_of(value: torch.Tensor) -> torch.Tensor:
    """``log y`` of a point of the simplex: the remembered one if the sample has it."""
    log_y = getattr(value, LOG_ATTRIBUTE, None)
    return value.log() if log_y is None else log_y


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """The one-hot argmax of ``soft`` in the forward pass; ``soft``'s gradient backward.
    ``hard + (soft - soft.detach())`` is exactly ``hard`` in floating point."""
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


class Concrete(dist.RelaxedOneHotCategorical):
    """Gumbel-Softmax at ``temperature``: Pyro's ``RelaxedOneHotCategorical`` (the same
    density, Maddison et al.'s eq. on the first K-1 coordinates), whose samples keep
    their logarithm so that the density stays finite at low temperatures."""

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        # the base distribution is ExpRelaxedCategorical: it samples log y directly
        return with_log(self.base_dist.rsample(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_y = log_of(value)
        # change of variables y = exp(log y): the Jacobian is prod_k y_k
        return self.base_dist.log_prob(log_y) - log_y.sum(-1)


class ConcreteStraightThrough(Concrete):
    """Straight-through Gumbel-Softmax: the sample is exactly one-hot; its log-density
    is that of the relaxed sample it was rounded from, as in Pyro's
    ``RelaxedOneHotCategoricalStraightThrough``."""

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        soft = super().rsample(sample_shape)
        return with_log(log_of(soft), straight_through(soft))


class CategoricalKLConcrete(Concrete):
    """Gumbel-Softmax whose KL to another is, by design, the KL of the categoricals
    they relax: ``KL(Cat(softmax(l_q)) || Cat(softmax(l_p)))``, at most log K. It is
    the objective of Jang et al. (2017) and of the original system, used by
    ``TraceMeanField_ELBO`` (``--inference gumbel-cat-kl``). The KL of the relaxed
    densities themselves grows without bound as q(y | x) grows confident (about 0.9
    nats per unit of logit margin, at any temperature), which pulls the classifier
    back towards uniform on every unlabelled image."""


class CategoricalKLConcreteStraightThrough(CategoricalKLConcrete, ConcreteStraightThrough):
    """The straight-through version of ``CategoricalKLConcrete``."""


@register_kl(CategoricalKLConcrete, CategoricalKLConcrete)
def _categorical_kl(q: CategoricalKLConcrete, p: CategoricalKLConcrete) -> torch.Tensor:
    return kl_divergence(dist.Categorical(logits=q.logits), dist.Categorical(logits=p.logits))


class LogisticNormalSimplex(TorchDistribution):
    """``y = softmax(u)``, ``u = (logits + eps) / temperature``, ``eps ~ N(0, I_K)``.

    softmax is unchanged by adding a constant to u, so u has no density on the
    simplex; its additive log-ratio ``v_k = log y_k - log y_K = u_k - u_K`` (k < K)
    does, and ``v -> softmax([v, 0])`` is a bijection onto the open simplex. So::

        v ~ N(m, S / tau^2),  m_k = (logits_k - logits_K) / tau,
                              S = I_{K-1} + 1 1^T  (the covariance of eps_k - eps_K)

        log p(y) = log N(alr(y); m, S / tau^2) - sum_{k=1}^{K} log y_k

    (Aitchison's logistic-normal; the last term is the log-Jacobian of alr, since
    det d softmax([v, 0]) / dv = prod_k y_k). With S^{-1} = I - 1 1^T / K and
    det S = K, for d = tau (v - m)::

        log N = -(|d|^2 - (sum d)^2 / K) / 2 - log(K) / 2 + (K - 1) log tau - (K - 1) log(2 pi) / 2

    This is the exact density of the samples ``rsample`` draws, so model and guide
    score the relaxed y consistently (their Jacobian terms cancel in the ELBO).
    """

    arg_constraints = {"logits": constraints.real_vector, "temperature": constraints.positive}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature: torch.Tensor | float, logits: torch.Tensor,
                 validate_args: bool | None = None):
        self.logits = logits
        self.temperature = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        new.temperature = self.temperature
        TorchDistribution.__init__(new, batch_shape, self.event_shape,
                                                   validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.logits.dtype, device=self.logits.device)
        return with_log(F.log_softmax((self.logits + eps) / self.temperature, dim=-1))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args and getattr(value, LOG_ATTRIBUTE, None) is None:
            self._validate_sample(value)
        log_y = log_of(value)
        k = log_y.shape[-1]
        tau = self.temperature
        v = log_y[..., :-1] - log_y[..., -1:]
        m = (self.logits[..., :-1] - self.logits[..., -1:]) / tau
        d = tau * (v - m)
        quadratic = (d**2).sum(-1) - d.sum(-1) ** 2 / k
        log_normal = (-0.5 * quadratic - 0.5 * math.log(k) + (k - 1) * tau.log()
                      - 0.5 * (k - 1) * math.log(2 * math.pi))
        return log_normal - log_y.sum(-1)


class CategoricalKLLogisticNormal(LogisticNormalSimplex):
    """The logistic-normal relaxation whose KL to another is the KL of the categoricals
    ``Cat(softmax(logits))`` it relaxes, as the original's LogisticNormalM2 scored it
    (``--inference logistic-normal-cat-kl``); see ``CategoricalKLConcrete`` for why."""


@register_kl(CategoricalKLLogisticNormal, CategoricalKLLogisticNormal)
def _categorical_kl_logistic_normal(q: CategoricalKLLogisticNormal,
                                    p: CategoricalKLLogisticNormal) -> torch.Tensor:
    return kl_divergence(dist.Categorical(logits=q.logits), dist.Categorical(logits=p.logits))


class LogSpaceDirichlet(dist.Dirichlet):
    """Dirichlet(c) sampled in log space, with a reparameterised gradient that stays
    finite for small concentrations.

    alpha = G / sum_k G_k with G_k ~ Gamma(c_k). For c_k << 1 a Gamma sample
    underflows to 0 in float32 with large probability (P(G < 1e-38) = 0.4 at
    c = 0.01), and log alpha_k, which every density here needs, is then -inf.
    So ``log G`` is drawn directly by shape augmentation (Marsaglia and Tsang 2000,
    used for gradients by Naesseth et al. 2017)::

        G = G' * U^(1/c),  G' ~ Gamma(c + 1),  U ~ Uniform(0, 1)
        log G = log G' + log(U) / c

    which is exact in distribution; the gradient flows through G' (PyTorch's
    implicit reparameterisation, well behaved at shape >= 1) and through 1/c.
    ``log alpha = log G - logsumexp(log G)`` is remembered with the sample, and the
    density is the Dirichlet's, written in log alpha."""

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        c = self.concentration.expand(shape)
        boosted = dist.Gamma(c + 1.0, torch.ones_like(c)).rsample()
        u = clamp_probs(torch.rand(shape, dtype=c.dtype, device=c.device))
        log_gamma = boosted.log() + u.log() / c
        return with_log(log_gamma - log_gamma.logsumexp(-1, keepdim=True))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_alpha = log_of(value)
        c = self.concentration
        return (((c - 1.0) * log_alpha).sum(-1) + torch.lgamma(c.sum(-1))
                - torch.lgamma(c).sum(-1))


class CategoricalKLGumbelRao(CategoricalKLConcreteStraightThrough):
    """The Gumbel-Rao estimator (Paulus, Maddison and Krause 2021): straight-through
    Gumbel-Softmax with its backward pass averaged over ``noise_draws`` draws of the
    Gumbel noise given the class drawn. The forward value is one-hot y = onehot(D),
    D ~ Cat(softmax(logits)); the backward pass is that of

        mean_m softmax((logits + G_m) / tau),  G_m ~ Gumbel(0, 1)^K given argmax(logits + G_m) = D,

    the noise held fixed (Rao-Blackwellising straight-through over the noise: the same
    expected gradient, less variance; one decoder pass). Scored, like its
    straight-through parent, by the KL of the categoricals it relaxes."""

    def __init__(self, temperature, logits=None, noise_draws: int = 10, validate_args=None):
        super().__init__(temperature, logits=logits, validate_args=validate_args)
        self.noise_draws = noise_draws

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(CategoricalKLGumbelRao, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.noise_draws = self.noise_draws
        return new

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            index = dist.Categorical(logits=self.logits.expand(shape)).sample()
        return self.given_class(F.one_hot(index, shape[-1]).to(self.logits.dtype))

    def given_class(self, hard: torch.Tensor) -> torch.Tensor:
        """The sample whose class is the one-hot ``hard``: ``hard`` forward, the gradient
        of the mean relaxed sample over ``noise_draws`` draws of the noise given it."""
        logits = self.logits.expand(hard.shape)  # normalised log-probabilities
        with torch.no_grad():
            noise = conditional_gumbel(logits, hard, self.noise_draws) - logits  # held fixed
        soft = F.softmax((logits + noise) / self.temperature, dim=-1).mean(0)
        return with_log(soft.clamp_min(1e-30).log(), hard + (soft - soft.detach()))


def conditional_gumbel(logits: torch.Tensor, hard: torch.Tensor, draws: int) -> torch.Tensor:
    """``draws`` samples of logits + G, G standard Gumbel, given that their argmax is
    the one-hot ``hard`` (Maddison, Tarlow and Minka 2014): the maximum is
    logsumexp(logits) + Gumbel, and each other coordinate a Gumbel with location
    logits_i truncated below it. Shape (draws, *logits.shape)."""
    e = torch.empty((draws, *logits.shape), dtype=logits.dtype,
                    device=logits.device).exponential_()
    top = logits.logsumexp(-1, keepdim=True) - e.log()  # the maximum's value
    top_value = (top * hard).sum(-1, keepdim=True)
    others = -torch.logaddexp(-top_value, e.log() - logits)  # -log(e^-top + e_i e^-logit_i)
    return torch.where(hard.bool(), top_value.expand_as(others), others)
