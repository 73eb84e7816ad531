"""The training objective of Kingma et al. (2014, eq. 9) around a model/guide pair:

    J = - sum_{x in U} ELBO(x) - sum_{(x, y) in L} ELBO(x, y)
        + alpha * sum_{(x, y) in L} -log q(y | x)

The ELBO part is whatever Pyro estimator the inference method names, run on the
plain model and guide; plate scaling makes one batch an unbiased estimate of the
sums over the whole sets. ``alpha = classifier_weight * N`` with N the size of the
unlabelled set (Kingma et al. use classifier_weight = 0.1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyro
import torch
from pyro.infer import ELBO, JitTrace_ELBO, JitTraceEnum_ELBO, Trace_ELBO
from torch import nn
from torch.nn import functional as F

from ppl_ssvae.batch import Batch, flat_images
from ppl_ssvae.inference import ExactY, SampledY
from ppl_ssvae.nets import one_dropout_mask


def _on_batch(fn):
    """``fn(batch)`` called as ``fn(*tensors, **static)``, ``Batch.as_arguments``'s form."""
    def call(*tensors: torch.Tensor, **static) -> None:
        return fn(Batch.from_arguments(*tensors, **static))
    return call


@contextlib.contextmanager
def evaluation(module: nn.Module) -> Iterator[None]:
    """Evaluation mode (batch norm reads its running statistics and leaves them as
    they are, dropout is off) without gradients; the module's mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


class SSVAE(nn.Module):
    """A model, its guide, the ELBO estimator, and the classifier term.

    Pyro's validation (argument and support checks on every distribution, the
    model/guide match) is off inside ``loss_and_grads`` and ``loss``: the pairs
    are checked by the tests, and the checks cost ~10% of a relaxed step on a CPU.
    Set ``validate = True`` to have them while debugging a new model.

    ``classify`` and ``loss`` are for users of a pair: they run in evaluation mode
    and leave the pair's mode and batch-norm statistics as they found them. The
    training step, ``loss_and_grads``, runs in whatever mode the pair is in (the
    training loop sets training mode), and reads the guide's own ``classify``.
    """

    validate = False

    def __init__(self, model: nn.Module, guide: nn.Module, elbo: ELBO, y_family: ExactY,
                 classifier_weight: float = 0.1, classifier_ramp_steps: int = 0,
                 x_dim: int | None = None, per_part: bool | None = None,
                 reruns_guide: bool = False):
        super().__init__()
        self.model, self.guide, self.x_dim = model, guide, x_dim
        self.elbo, self.y_family = elbo, y_family
        self.classifier_weight = classifier_weight
        self.classifier_ramp_steps = classifier_ramp_steps
        # Pyro's JIT ELBOs trace tensor arguments only: hand them the batch's tensors
        self.jit = isinstance(elbo, JitTrace_ELBO | JitTraceEnum_ELBO)
        # what ``loss`` uses: a JIT ELBO compiles a function with gradients, and an
        # evaluation without them cannot run it (build() sets the uncompiled twin)
        self.eager_elbo = elbo
        self._tensor_model, self._tensor_guide = _on_batch(model), _on_batch(guide)
        # Trace_ELBO adds to an unobserved site's learning signal the terms of every plate
        # the site is not in: in one call, every unlabelled y's score-function term would
        # carry the whole labelled batch's terms too (noise, no information; measured in
        # the README). Each part in its own call, y learns from its own image alone, as
        # the original's ApproxM2 did. The loss and the reparameterised gradients are the
        # same either way, and the draws come in the same order. The inference method
        # says whether it needs this (``Inference.per_part``); a pair built by hand
        # without saying gets it for a sampled y under Trace_ELBO.
        if per_part is None:
            per_part = isinstance(y_family, SampledY) and isinstance(elbo, Trace_ELBO)
        self.per_part = per_part
        # sequential enumeration runs the guide once per label value: every run must see
        # the step's one dropout mask (``nets.one_dropout_mask``)
        self.reruns_guide = reruns_guide
        self._objective = None

    def _loss_and_grads(self, batch: Batch) -> float:
        """``elbo.loss_and_grads(model, guide, batch)`` (each part apart for a sampled y
        under Trace_ELBO)."""
        masks = one_dropout_mask() if self.reruns_guide else contextlib.nullcontext()
        with masks:
            if self.per_part:
                return sum(self._call_elbo(part) for part in batch.apart())
            return self._call_elbo(batch)

    def _call_elbo(self, batch: Batch) -> float:
        """``elbo.loss_and_grads(model, guide, batch)``, in its tensor form under --jit."""
        if not self.jit:
            return self.elbo.loss_and_grads(self.model, self.guide, batch)
        self._claim_param_store()
        tensors, static = batch.as_arguments()
        return self.elbo.loss_and_grads(self._tensor_model, self._tensor_guide, *tensors, **static)

    def _claim_param_store(self) -> None:
        """Make Pyro's param store hold this pair's parameters. A compiled ELBO feeds
        the store's parameters to the traced function; another pair registered under
        the same names (``model$$$...``) would otherwise hand it that pair's tensors."""
        store = pyro.get_param_store()
        for prefix, module in (("model", self.model), ("guide", self.guide)):
            for name, p in module.named_parameters():
                key = f"{prefix}$$${name}"
                if key not in store or store[key] is not p:
                    store[key] = p

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), in evaluation mode: the prediction is their argmax.

        Args:
            x: images, (B, D) or (B, *shape).

        Returns:
            The logits, (B, K).
        """
        with evaluation(self):
            return self.guide.classify(flat_images(x, self.x_dim))

    def alpha(self, batch: Batch, step: int) -> float:
        n = batch.n_u or (len(batch.x_u) if batch.x_u is not None else 0)
        ramp = 1.0
        if self.classifier_ramp_steps > 0:
            ramp = min(1.0, 0.01 + 0.99 * step / self.classifier_ramp_steps)
        return self.classifier_weight * n * ramp

    def classifier_loss(self, batch: Batch, step: int = 0) -> torch.Tensor:
        """alpha * sum over the labelled set of -log q(y | x), estimated from the batch."""
        if batch.x_l is None or self.classifier_weight == 0:
            return torch.zeros(())
        nll = F.cross_entropy(self.guide.classify(batch.x_l), batch.y_l, reduction="sum")
        scale = (batch.n_l or len(batch.x_l)) / len(batch.x_l)
        return self.alpha(batch, step) * scale * nll

    def loss_and_grads(self, batch: Batch, step: int = 0) -> dict[str, float]:
        """One step's loss, its gradients accumulated in ``.grad``; the returned terms
        are per image (divided by the number of images the batch stands for)."""
        self.y_family.set_step(step)
        with pyro.validation_enabled(self.validate):
            negative_elbo = self._loss_and_grads(batch)
        classifier = self.classifier_loss(batch, step)
        if classifier.requires_grad:
            classifier.backward()
        n = batch.size
        classifier = float(classifier.detach())
        return {"loss": (negative_elbo + classifier) / n, "negative_elbo": negative_elbo / n,
                "classifier": classifier / n}

    @property
    def objective(self) -> Objective:
        """This pair's whole training objective (the ELBO estimator and the classifier
        term) as a Pyro ELBO, for a plain Pyro loop that trains what the CLI trains::

            svi = pyro.infer.SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-3}),
                                 loss=pair.objective)
            svi.step(batch)

        It counts its own steps (for ``--classifier-ramp-steps`` and temperature schedules).
        Handing SVI a bare ``TraceEnum_ELBO()`` instead trains the ELBO alone: without
        the classifier term, q(y | x) never sees the labels."""
        if self._objective is None:
            self._objective = Objective(self)
        return self._objective

    def loss(self, batch: Batch, step: int = 0) -> float:
        """The objective per image, in evaluation mode, without gradients.

        Args:
            batch: the images, labelled and unlabelled, and the sizes they stand for.
            step: the training step, for settings that follow a schedule (the
                temperature, the classifier weight's ramp).

        Returns:
            The negative ELBO plus the classifier term, per image the batch stands for.
        """
        self.y_family.set_step(step)
        with evaluation(self), pyro.validation_enabled(self.validate):
            negative_elbo = self.eager_elbo.loss(self.model, self.guide, batch)
            return (negative_elbo + float(self.classifier_loss(batch, step))) / batch.size



class Objective(ELBO):
    """``SSVAE.objective``: the pair's training objective J (module docstring) in the
    form Pyro's ``SVI`` takes a loss. ``loss_and_grads`` returns J for the whole data
    the batch stands for (not per image) and accumulates its gradients; ``step`` counts
    the calls. The model and guide SVI passes must be the pair's own."""

    def __init__(self, pair: SSVAE):
        super().__init__()
        self.pair, self.step = pair, 0

    def _check(self, model, guide) -> None:
        if model is not self.pair.model or guide is not self.pair.guide:
            raise ValueError("pair.objective trains its own pair: give SVI pair.model and "
                             "pair.guide")

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("pair.objective wraps the pair's ELBO; it has no trace of its own")

    def loss(self, model, guide, batch: Batch) -> float:
        self._check(model, guide)
        return self.pair.loss(batch, self.step) * batch.size

    def loss_and_grads(self, model, guide, batch: Batch) -> float:
        self._check(model, guide)
        terms = self.pair.loss_and_grads(batch, self.step)
        self.step += 1
        return terms["loss"] * batch.size
