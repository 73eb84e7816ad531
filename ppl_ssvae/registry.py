"""Which models exist, which inference methods each accepts, and how to build a pair.

``build(settings)`` maps ``--model`` and ``--inference`` to a ``SSVAE``: the
model, the guide and the ELBO estimator. A model is added by writing its file in
``models/``, its guide in ``guides/``, and one ``ModelSpec`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ppl_ssvae.config import Settings
from ppl_ssvae.guides import (
    ADGMGuide,
    ClassifierGuide,
    DirichletGuide,
    HierarchicalGuide,
    LogisticNormalPriorGuide,
    M2Guide,
    TwoDigitClassifierGuide,
    TwoDigitGuide,
)
from ppl_ssvae.inference import INFERENCES, ExactY, Inference
from ppl_ssvae.models import (
    ADGM,
    M2,
    Classifier,
    DirichletPrior,
    Hierarchical,
    LogisticNormalPrior,
    TwoDigit,
    TwoDigitClassifier,
)
from ppl_ssvae.nets import MLP
from ppl_ssvae.objective import SSVAE


class UnsupportedError(ValueError):
    """An unknown model or inference, or a combination a model does not accept."""


Pair = tuple[nn.Module, nn.Module]
Factory = Callable[[Settings, ExactY, int, int], nn.Module]  # (settings, y family, K, x_dim)


@dataclass
class ModelSpec:
    """One registered model: what `ppl-ssvae list` prints and what `build` builds.

    Attributes:
        name: the ``--model`` name.
        description: the generative story, one line.
        inferences: the inference methods it accepts; the first is the default.
        make_model: builds the model from ``(settings, y_family, K, x_dim)``.
        make_guide: builds the guide from the same arguments.
        classifier_term: whether the objective adds Kingma et al.'s
            ``alpha * -log q(y|x)`` over the labelled images.
        make_pair: builds model and guide together, in place of the two factories, when
            they share a network.
    """

    name: str
    description: str
    inferences: tuple[str, ...]  # the first is the default
    make_model: Factory | None
    make_guide: Factory | None
    classifier_term: bool = True  # add Kingma et al.'s alpha * -log q(y|x) to the ELBO
    # builds model and guide together, in place of the two, when they share a network
    make_pair: Callable[[Settings, ExactY, int, int], Pair] | None = None
    # the number of classes K the model needs (None: any K), with what to say otherwise
    classes: int | None = None
    classes_hint: str = ""
    # (K, x_dim) of a data set the model builds on: what the tests and `render` use
    example_data: tuple[int, int] = (10, 784)


def _m2(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return M2(k, s.z_dim, d, s.hidden, s.activation, family, s.likelihood)


def _m2_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return M2Guide(k, s.z_dim, d, s.hidden, s.activation, s.batch_norm, s.input_dropout, family)


def _logistic_normal_prior(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    # softmax(a / tau) with a ~ N(0, I) is softmax(a') with a' ~ N(0, I / tau^2): the
    # original's sharpening s = 1 / tau, written as the prior's scale
    return LogisticNormalPrior(k, s.z_dim, d, s.hidden, s.activation, family,
                               scale=1.0 / s.temperature, likelihood=s.likelihood,
                               labelled_one_hot=s.labelled_input == "one-hot")


def _logistic_normal_prior_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return LogisticNormalPriorGuide(k, s.z_dim, d, s.hidden, s.activation, s.batch_norm,
                                    s.input_dropout, family,
                                    labelled_one_hot=s.labelled_input == "one-hot")


def _dirichlet(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return DirichletPrior(k, s.z_dim, d, s.hidden, s.activation, s.dirichlet_concentration,
                          family, s.likelihood)


def _dirichlet_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return DirichletGuide(k, s.z_dim, d, s.hidden, s.activation, s.batch_norm, s.input_dropout,
                          family)


def _mlp_pair(s: Settings, family: ExactY, k: int, d: int) -> Pair:
    network = MLP([d], s.hidden, k, s.activation, s.batch_norm, s.input_dropout)
    return Classifier(network), ClassifierGuide(network)  # one network, two views


M2_INFERENCES = ("enum", "enum-seq", "score", "tracegraph", "tracegraph-nn", "gumbel",
                 "st-gumbel", "gumbel-cat-kl", "st-gumbel-cat-kl", "logistic-normal",
                 "logistic-normal-cat-kl", "iwae", "iwae-logistic-normal")
CONTINUOUS_INFERENCES = ("reparam", "analytic-kl", "iwae")

def _adgm(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return ADGM(k, s.z_dim, d, s.hidden, s.activation, family, likelihood=s.likelihood)


def _adgm_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return ADGMGuide(k, s.z_dim, d, s.hidden, s.activation, s.batch_norm, s.input_dropout, family)


def _with_declared(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the inference methods that declare it (``Inference.models``) added."""
    declared = tuple(name for name, inference in INFERENCES.items()
                     if spec.name in inference.models and name not in spec.inferences)
    spec.inferences = spec.inferences + declared
    return spec


def _two_digit(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return TwoDigit(s.z_dim, d, s.hidden, s.activation, family, s.likelihood)


def _two_digit_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return TwoDigitGuide(s.z_dim, d, s.hidden, s.activation, s.batch_norm, s.input_dropout,
                         family)


def _two_digit_mlp_pair(s: Settings, family: ExactY, k: int, d: int) -> Pair:
    network = MLP([d], s.hidden, (10, 10), s.activation, s.batch_norm, s.input_dropout)
    return TwoDigitClassifier(network), TwoDigitClassifierGuide(network)


def _label_activation(s: Settings) -> str:
    # the networks that read y run K times in an exact sum: maxout's 4 pieces would
    # make their hidden layer 4 times as wide, so they take softplus in its place
    return "softplus" if s.activation == "maxout" else s.activation


def _hierarchical(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return Hierarchical(k, s.z_dim, d, s.hidden, s.activation, family, s.likelihood,
                        s.z1_dim, (s.label_hidden,), _label_activation(s))


def _hierarchical_guide(s: Settings, family: ExactY, k: int, d: int) -> nn.Module:
    return HierarchicalGuide(k, s.z_dim, d, s.hidden, s.activation, s.batch_norm,
                             s.input_dropout, family, s.z1_dim, (s.label_hidden,),
                             s.classifier_input, _label_activation(s))


TWO_DIGIT_INFERENCES = ("enum", "enum-seq", "score", "gumbel", "st-gumbel", "gumbel-cat-kl",
                        "st-gumbel-cat-kl", "logistic-normal", "logistic-normal-cat-kl", "iwae")
HIERARCHICAL_INFERENCES = ("enum", "enum-seq", "score", "tracegraph", "tracegraph-nn", "gumbel",
                           "st-gumbel", "gumbel-cat-kl", "st-gumbel-cat-kl", "logistic-normal",
                           "logistic-normal-cat-kl", "iwae")
TWO_DIGIT_HINT = ("reads a class as two digits, 10 * left + right, so it needs a data set of "
                  "100 such classes: use --dataset two-digit-mnist (or --model m2 for flat "
                  "classes)")

MODELS: dict[str, ModelSpec] = {
    spec.name: _with_declared(spec)
    for spec in [
        ModelSpec("m2", "Kingma et al.'s M2: y ~ Cat(1/K), z ~ N(0, I), x ~ Bernoulli(f(y, z))",
                  M2_INFERENCES, _m2, _m2_guide),
        ModelSpec("logistic-normal-prior", "a ~ N(0, I_K / tau^2), alpha = softmax(a), y ~ Cat(alpha), "
                  "z ~ N(0, I), x ~ Bernoulli(f(alpha, z))", CONTINUOUS_INFERENCES,
                  _logistic_normal_prior, _logistic_normal_prior_guide),
        ModelSpec("dirichlet", "alpha ~ Dirichlet(--dirichlet-concentration), y ~ Cat(alpha), "
                  "z ~ N(0, I), x ~ Bernoulli(f(alpha, z))", CONTINUOUS_INFERENCES,
                  _dirichlet, _dirichlet_guide),
        ModelSpec("mlp", "the classifier alone, y ~ Cat(softmax(g(x))), on labelled data only",
                  ("ml",), None, None, classifier_term=False, make_pair=_mlp_pair),
        ModelSpec("adgm", "Maaloe et al.'s auxiliary DGM: M2 plus a ~ p(a|x,y,z), guide "
                  "q(a|x) q(y|a,x) q(z|a,x,y)", ("enum", "enum-seq"), _adgm, _adgm_guide),
        ModelSpec("two-digit", "a label of two digits: y1, y2 ~ Cat(1/10), z ~ N(0, I), "
                  "x ~ Bernoulli(f(y1, y2, z)); class 10 y1 + y2; needs 100 classes",
                  TWO_DIGIT_INFERENCES, _two_digit, _two_digit_guide, classes=100,
                  classes_hint=TWO_DIGIT_HINT, example_data=(100, 1568)),
        ModelSpec("two-digit-mlp", "the two-digit classifier alone, two 10-way heads "
                  "y1, y2 ~ Cat(softmax(g(x))), on labelled data only", ("ml",), None, None,
                  classifier_term=False, make_pair=_two_digit_mlp_pair, classes=100,
                  classes_hint=TWO_DIGIT_HINT, example_data=(100, 1568)),
        ModelSpec("hierarchical", "M1+M2 as one model: y ~ Cat(1/K), z2 ~ N(0, I), "
                  "z1 ~ N(mu(y, z2), sigma(y, z2)), x ~ Bernoulli(f(z1)); guide q(z1|x) "
                  "q(y|x) q(z2|z1,y)", HIERARCHICAL_INFERENCES, _hierarchical,
                  _hierarchical_guide),
    ]
}


def register_inference(inference: Inference) -> Inference:
    """Add an inference method (``ppl_ssvae.inference.Inference``) to the library: the
    CLI, ``build``, ``ppl-ssvae list`` and the comparison runners take it at once, for
    the models its ``models`` names. A method written into ``INFERENCES`` in
    ``ppl_ssvae/inference.py`` is registered when the package loads; this is for one
    defined elsewhere (a user's own file, a notebook).

    Args:
        inference: the method's entry; its ``models`` name the models that accept it.

    Returns:
        The same entry, registered.

    Raises:
        UnsupportedError: a method of that name exists, or ``models`` names an unknown model.
    """
    if inference.name in INFERENCES:
        raise UnsupportedError(f"an inference method {inference.name!r} exists already")
    unknown = [m for m in inference.models if m not in MODELS]
    if unknown:
        raise UnsupportedError(f"inference {inference.name!r} names unknown models "
                               f"{', '.join(unknown)}: choose from {', '.join(MODELS)}")
    INFERENCES[inference.name] = inference
    for model in inference.models:
        _with_declared(MODELS[model])
    return inference


def check(model: str, inference: str | None = None) -> ModelSpec:
    """The spec of ``model``, after checking that it accepts ``inference``.

    Args:
        model: a name in `MODELS`.
        inference: an inference method; ``None`` is the model's default, always supported.

    Returns:
        The model's `ModelSpec`.

    Raises:
        UnsupportedError: an unknown model or method; the message lists what is supported.
    """
    if model not in MODELS:
        raise UnsupportedError(f"unknown model {model!r}: choose one of {', '.join(MODELS)} "
                               f"(ppl-ssvae list)")
    spec = MODELS[model]
    if inference is not None and inference not in spec.inferences:
        raise UnsupportedError(f"model {model!r} does not take --inference {inference!r}: "
                               f"it takes {', '.join(spec.inferences)} (ppl-ssvae list)")
    return spec


def resolve(settings: Settings) -> Settings:
    """``settings`` with the inference method filled in: ``None`` becomes the model's
    first listed method, its default. Raises ``UnsupportedError`` as ``check`` does."""
    spec = check(settings.model, settings.inference)
    settings = settings if settings.inference else settings.replace(inference=spec.inferences[0])
    try:  # the method's own defaults (--samples, --particles)
        settings = INFERENCES[settings.inference].resolve(settings)
    except ValueError as e:
        raise UnsupportedError(str(e)) from None
    problem = INFERENCES[settings.inference].jit_problem(settings) if settings.jit else None
    if problem:
        raise UnsupportedError(f"--jit: {problem}; drop --jit")
    return settings


def build(settings: Settings, num_classes: int = 10, x_dim: int = 784) -> SSVAE:
    """The model/guide pair, ELBO and objective that ``settings`` describe.

    Args:
        settings: the model (``settings.model``), the inference method
            (``settings.inference``; ``None``: the model's first listed method) and the
            networks' sizes.
        num_classes: K, the number of classes (the data set's).
        x_dim: the number of values of one example (784 for MNIST).

    Returns:
        The pair, an `SSVAE`: ``pair.model`` and ``pair.guide`` are plain Pyro callables
        taking a `Batch`; ``pair.loss(batch)`` and ``pair.classify(x)`` evaluate it.

    Raises:
        UnsupportedError: an unknown model, or an inference method it does not accept.

    Example:
        ```python
        import pyro
        from ppl_ssvae import Settings, build

        pair = build(Settings(model="m2", inference="enum"), num_classes=10, x_dim=784)
        svi = pyro.infer.SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 1e-3}),
                             pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
        ```
    """
    settings = resolve(settings)
    spec = check(settings.model, settings.inference)
    if spec.classes is not None and num_classes != spec.classes:
        need = spec.classes_hint or f"needs {spec.classes} classes"
        raise UnsupportedError(f"model {settings.model!r} {need}; this data set has "
                               f"{num_classes}")
    inference = INFERENCES[settings.inference]
    family = inference.y_family(settings)
    if spec.make_pair is not None:
        model, guide = spec.make_pair(settings, family, num_classes, x_dim)
    else:
        model = spec.make_model(settings, family, num_classes, x_dim)
        guide = spec.make_guide(settings, family, num_classes, x_dim)
    classifier_weight = settings.classifier_weight if spec.classifier_term else 0.0
    pair = SSVAE(model, guide, inference.elbo(settings), family, classifier_weight,
                 settings.classifier_ramp_steps, x_dim, per_part=inference.per_part,
                 reruns_guide=inference.reruns_guide)
    if settings.jit:  # evaluation runs without gradients, which a compiled ELBO cannot
        pair.eager_elbo = inference.elbo(settings.replace(jit=False))
    return pair


def table() -> list[tuple[str, str, str]]:
    """(model, inference methods, description) for ``ppl-ssvae list``."""
    return [(s.name, ", ".join(s.inferences), s.description) for s in MODELS.values()]


def inference_table() -> list[tuple[str, str, str, str]]:
    """(inference method, cost in decoder passes per unlabelled image, its defaults,
    description) for ``ppl-ssvae list``."""
    rows = []
    for name, inference in INFERENCES.items():
        defaults = ", ".join(f"--{key} {value}" for key, value in inference.defaults.items())
        rows.append((name, inference.passes, defaults, inference.description))
    return rows
