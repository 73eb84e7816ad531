"""A scikit-learn estimator over the training loop, for people who live in notebooks.

    from ppl_ssvae import SSVAEClassifier
    clf = SSVAEClassifier(epochs=30, hidden=(64,), z_dim=8).fit(X, y)   # y = -1: unlabelled
    clf.predict(X_new), clf.predict_proba(X_new), clf.score(X_test, y_test)

It follows scikit-learn's rules for estimators (``__init__`` stores its parameters and
does nothing else; fitted state ends in ``_``), so ``cross_val_score``, ``GridSearchCV``
and ``clone`` take it. Its parameters are the fields of ``ppl_ssvae.Settings`` that
decide what is trained (the same names and defaults: ``model``, ``inference``,
``epochs``, ``hidden``, ``likelihood``, ...) and ``out``; ``fit`` is ``ppl_ssvae.train``
on a ``Dataset`` built from the arrays, then ``ppl_ssvae.load_run`` on its output. It is
not a second implementation.

``fit(X, y)``: X of shape (N, D) or (N, H, W); y of N labels, -1 where unknown
(scikit-learn's convention for semi-supervised learning). Every labelled example is
used as such, and the labelled examples also serve as the validation and test splits
the loop reports on (model selection is scikit-learn's job here); the weights kept are
those of the last step. The classes are the distinct labels other than -1, in sorted
order (``classes_``). ``out=None`` trains in a temporary directory, removed after
``fit``; a path keeps the run there, to be used with ``ppl-ssvae predict``/``sample``.

scikit-learn is an optional dependency (``pip install ppl-ssvae[sklearn]``): this
module imports it, and ``import ppl_ssvae`` does not import this module until
``ppl_ssvae.SSVAEClassifier`` is asked for.
"""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from pathlib import Path

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # pragma: no cover - the dev extra installs it
    raise ImportError("ppl_ssvae.SSVAEClassifier needs scikit-learn: pip install "
                      "'ppl-ssvae[sklearn]'") from e

from ppl_ssvae.config import Settings
from ppl_ssvae.data import Dataset, Split
from ppl_ssvae.run import Run, load_run

# Settings that say where data and outputs are, or how a command-line run reports: the
# estimator decides these itself (arrays in memory, a temporary directory, silence).
NOT_PARAMETERS = ("dataset", "data_dir", "labels", "out", "resume", "checkpoint_every",
                  "figures", "progress")
PARAMETERS = [f for f in dataclasses.fields(Settings) if f.name not in NOT_PARAMETERS]


class SSVAEClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier trained by the library's own loop (``ppl_ssvae.train``).

    A thin layer over `Settings` and `train`, not a second implementation. Labels follow
    scikit-learn's convention for semi-supervised learning: an integer class, or -1 where
    the label is unknown. Needs the ``sklearn`` extra (``pip install 'ppl-ssvae[sklearn]'``).

    Args:
        **params (Any): any field of `Settings` but those about data and files (``model``,
            ``inference``, ``hidden``, ``z_dim``, ``epochs``, ``seed``, ...; defaults as
            there), and ``out``: a directory to keep the run in (default: a temporary one,
            removed after ``fit``).

    Raises:
        TypeError: a parameter that is not one of those.

    Example:
        ```python
        clf = ppl_ssvae.SSVAEClassifier(hidden=(128,), z_dim=16, epochs=100)
        clf.fit(x, y)                  # y = -1: unlabelled
        clf.score(x_test, y_test)
        clf.run.sample(8, y=3)         # the generative model behind it
        ```
    """

    def __init__(self, **params):
        defaults = {f.name: getattr(Settings(), f.name) for f in PARAMETERS}
        unknown = set(params) - set(defaults) - {"out"}
        if unknown:
            raise TypeError(f"SSVAEClassifier got unexpected parameters {sorted(unknown)}")
        for name, value in {**defaults, "out": None, **params}.items():
            setattr(self, name, value)

    # scikit-learn reads the parameters from the signature of __init__: list them there
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                             default=getattr(Settings(), f.name)) for f in PARAMETERS]
        + [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None)])

    def settings(self, out: str | Path) -> Settings:
        """The ``Settings`` that ``fit`` trains with."""
        values = {f.name: getattr(self, f.name) for f in PARAMETERS}
        if values["hidden"] is not None:
            values["hidden"] = tuple(values["hidden"])
        return Settings(**values, dataset="array", out=str(out), progress=False, figures=False,
                        checkpoint_every=0)

    def fit(self, X, y) -> SSVAEClassifier:
        """Train on ``X``, using the labels of ``y`` where they are known.

        Args:
            X (array): examples, (N, D) or (N, H, W).
            y (array): one label per example: a class, or -1 where it is unknown.

        Returns:
            The fitted classifier.

        Raises:
            ValueError: ``y`` of the wrong length, or labels of fewer than two classes.
        """
        x = _examples(X)
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(x):
            raise ValueError(f"y must hold one label per example ({len(x)}), got shape "
                             f"{labels.shape}")
        known = labels != -1
        self.classes_ = np.unique(labels[known])
        if len(self.classes_) < 2:
            raise ValueError("y needs labelled examples of at least two classes (-1 marks "
                             "the unlabelled ones)")
        codes = np.full(len(labels), -1, dtype=np.int64)
        codes[known] = np.searchsorted(self.classes_, labels[known])
        flat = torch.from_numpy(x.reshape(len(x), -1))
        codes_t = torch.from_numpy(codes)
        labelled = torch.from_numpy(np.flatnonzero(known))
        held = Split(flat[labelled], codes_t[labelled])  # what the loop reports on
        data = Dataset(Split(flat, codes_t), held, held, len(self.classes_), "arrays",
                       tuple(x.shape[1:]), "arrays", labelled)
        self.n_features_in_ = flat.shape[1]
        if self.out is not None:
            self.summary_, self.run_ = self._train(data, Path(self.out))
        else:
            with tempfile.TemporaryDirectory(prefix="ppl-ssvae-") as directory:
                self.summary_, self.run_ = self._train(data, Path(directory))
        return self

    def _train(self, data: Dataset, out: Path) -> tuple[dict, Run]:
        from ppl_ssvae.train import train

        summary = train(self.settings(out), data)
        return summary, load_run(out, self.device)

    def predict_proba(self, X) -> np.ndarray:
        """q(y | x) of every example, (N, K), columns in the order of ``classes_``."""
        check_is_fitted(self, "run_")
        return self.run_.predict_proba(_examples(X)).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of every example, as the labels of ``fit`` name them."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labelled examples (y != -1)."""
        labels = np.asarray(y)
        known = labels != -1
        if not known.any():
            raise ValueError("score needs labelled examples (y != -1)")
        x = _examples(X)[known]
        weights = None if sample_weight is None else np.asarray(sample_weight)[known]
        return float(np.average(self.predict(x) == labels[known], weights=weights))

    @property
    def run(self) -> Run:
        """The fitted run: the Pyro model and guide, ``sample``, ``log_marginal``, ..."""
        check_is_fitted(self, "run_")
        return self.run_


def _examples(X) -> np.ndarray:
    x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if x.ndim not in (2, 3) or len(x) == 0:
        raise ValueError(f"X must have shape (N, D) or (N, H, W), got {x.shape}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating)
                                   or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"X must hold numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("X holds NaN or infinite values")
    return x
