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
(scikit-learn's convention for semi-supervised learning): integer labels with -1; float
labels that are whole numbers, with -1 (NaN is refused, not taken as unknown); string
classes as an array of dtype object, with the integer -1 (an array of dtype str cannot
hold it and is refused, as scikit-learn's SelfTrainingClassifier refuses it; so is the
string '-1'). Every labelled example is
used as such, and the labelled examples also serve as the validation and test splits
the loop reports on (model selection is scikit-learn's job here); the weights kept are
those of the last step. The classes are the distinct labels other than -1, in sorted
order (``classes_``). ``out=None`` trains in a temporary directory, removed after
``fit``; a path keeps the run there, to be used with ``ppl-ssvae predict``/``sample``,
and a second ``fit`` into the same path is refused (``ValueError`` naming ``out``).

A fitted estimator pickles (``pickle``, ``joblib``): the run travels as its settings
and weights, and the copy predicts exactly as the original. ``predict``,
``predict_proba`` and ``score`` before ``fit`` raise scikit-learn's ``NotFittedError``.

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
        labels, known = _labels(y, len(x))
        classes = np.unique(labels[known])
        if len(classes) < 2:
            raise ValueError("y needs labelled examples of at least two classes (-1 marks "
                             "the unlabelled ones)")
        if self.out is not None:
            _check_out(Path(self.out))
        self.classes_ = classes
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
        probs = self.predict_proba(X)  # first: NotFittedError before fit
        return self.classes_[probs.argmax(1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labelled examples (those ``fit`` would take as labelled)."""
        check_is_fitted(self, "run_")
        labels, known = _labels(y, len(np.asarray(X)))
        if not known.any():
            raise ValueError("score needs labelled examples (y != -1)")
        x = _examples(X)[known]
        weights = None if sample_weight is None else np.asarray(sample_weight)[known]
        return float(np.average(self.predict(x) == labels[known], weights=weights))

    def __getstate__(self) -> dict:
        """What pickle and joblib keep: the parameters, and of a fitted estimator its
        run as plain values (settings, the data's shape, the weights), which need no
        directory; the Pyro pair itself holds closures that do not pickle."""
        state = dict(super().__getstate__())
        run = state.pop("run_", None)
        if run is not None:
            state["_fitted_run"] = {
                "directory": str(run.directory), "settings": run.settings.to_dict(),
                "data": dict(run.data), "num_classes": run.num_classes,
                "shape": list(run.shape),
                "weights": {k: v.detach().cpu() for k, v in run.pair.state_dict().items()}}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        fitted = state.pop("_fitted_run", None)
        super().__setstate__(state)
        if fitted is not None:
            from ppl_ssvae.registry import build

            settings = Settings.from_dict(fitted["settings"])
            if settings.device != "cpu" and not torch.cuda.is_available():
                settings = settings.replace(device="cpu")  # unpickled where there is no GPU
            pair = build(settings, fitted["num_classes"], int(np.prod(fitted["shape"])))
            pair.load_state_dict(fitted["weights"])
            pair.to(settings.device).eval()
            self.run_ = Run(Path(fitted["directory"]), settings, pair, fitted["num_classes"],
                            tuple(fitted["shape"]), fitted["data"])

    @property
    def run(self) -> Run:
        """The fitted run: the Pyro model and guide, ``sample``, ``log_marginal``, ..."""
        check_is_fitted(self, "run_")
        return self.run_


def _labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as an array and which of its labels are known, by scikit-learn's convention
    for semi-supervised learning: -1 marks an unknown label, in integer labels (and
    float labels, which must be whole numbers: NaN is not a mark) and, as an integer, in
    labels of dtype object whose classes are strings. An array of strings (dtype str)
    cannot hold the integer -1, and is refused as scikit-learn's SelfTrainingClassifier
    refuses it. ``ValueError`` in one line for anything else that is not a class."""
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"y must hold one label per example ({n}), got shape {labels.shape}")
    kind = labels.dtype.kind
    if kind == "b":
        return labels, np.ones(n, dtype=bool)
    if kind in "iu":
        return labels, labels != -1
    if kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError("y holds NaN or infinite values: mark an unknown label with -1, "
                             "as scikit-learn's semi-supervised estimators do (y[np.isnan(y)] = -1)")
        if (labels != np.round(labels)).any():
            raise ValueError("y holds values that are not whole numbers, which are not classes: "
                             "give class labels, and -1 for unknown ones")
        return labels, labels != -1
    if kind in "US":
        raise ValueError(f"y holds strings (dtype {labels.dtype}), which cannot mark a label "
                         f"unknown: as for scikit-learn's SelfTrainingClassifier, give y dtype "
                         f"object with the integer -1 for unknown labels "
                         f"(y = y.astype(object); y[unknown] = -1)")
    if kind == "O":
        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        known = np.array([not (is_int(v) and v == -1) for v in labels], dtype=bool)
        values = labels[known]
        if all(isinstance(v, str) for v in values):
            if any(v == "-1" for v in values):
                raise ValueError("y holds the string '-1': an unknown label is marked by the "
                                 "integer -1, and '-1' is not taken as a class; replace it")
            return labels, known
        if all(is_int(v) for v in values):
            return labels.astype(np.int64), known
        odd = next(v for v in values if not isinstance(v, str))
        raise ValueError(f"y holds {odd!r} ({type(odd).__name__}) among its labels: labels of "
                         f"dtype object must be strings, with the integer -1 for unknown ones")
    raise ValueError(f"y must hold class labels (integers, or strings as dtype object), got "
                     f"dtype {labels.dtype}")


def _check_out(out: Path) -> None:
    """A fixed ``out=`` that an earlier fit (or another run) has written into is refused
    before training, naming the parameter to change; nothing there is overwritten."""
    from ppl_ssvae.io import RUN_OUTPUTS

    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if found:
        raise ValueError(f"out={str(out)!r} holds the outputs of an earlier fit "
                         f"({', '.join(found)}): set out to a new directory (or out=None for a "
                         f"temporary one), or remove that directory, to fit again")


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
