"""The scikit-learn estimator: scikit-learn's rules for estimators, fit with -1 for
unlabelled examples, and its use inside cross_val_score, GridSearchCV and clone; it
trains through the same loop and leaves a run that load_run reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from ppl_ssvae import Settings, SSVAEClassifier, load_run
from ppl_ssvae.data import synthetic

TINY = {"hidden": (16,), "z_dim": 4, "epochs": 3, "batch_size": 100, "labelled_batch_size": 30,
        "eval_batch_size": 1000}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def few_labels():
    """600 synthetic images with class labels 1..5 (not 0..K-1), 8 labelled per class."""
    data = synthetic(num_train=600, num_valid=10, num_test=200, num_classes=5, seed=0)
    x, y = data.train.x.numpy(), data.train.y.numpy() + 1
    partial = np.full(len(y), -1)
    rng = np.random.default_rng(0)
    for c in range(1, 6):
        partial[rng.choice(np.flatnonzero(y == c), 8, replace=False)] = c
    return x, partial, y, data.test.x.numpy(), data.test.y.numpy() + 1


def test_parameters_are_the_settings_and_init_stores_them_only():
    clf = SSVAEClassifier(epochs=3, hidden=(16,))
    params = clf.get_params()
    assert params["epochs"] == 3 and params["hidden"] == (16,) and params["out"] is None
    assert params["model"] == Settings().model and params["likelihood"] == "bernoulli"
    assert "dataset" not in params and "progress" not in params
    assert clf.set_params(epochs=5) is clf and clf.epochs == 5
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and copy is not clf
    assert "epochs=5" in repr(clf)
    with pytest.raises(TypeError, match="unexpected parameters"):
        SSVAEClassifier(epoch=3)
    with pytest.raises(ValueError):
        clf.set_params(epoch=3)
    # nothing is checked or trained in __init__: a bad value surfaces at fit
    SSVAEClassifier(lr=-1.0)


def test_fit_predict_score_with_unlabelled_examples(few_labels, tmp_path):
    x, partial, _, x_test, y_test = few_labels
    clf = SSVAEClassifier(**TINY, classifier_weight=1.0, out=str(tmp_path / "run"))
    assert clf.fit(x, partial) is clf
    assert clf.classes_.tolist() == [1, 2, 3, 4, 5] and clf.n_features_in_ == 784
    probs = clf.predict_proba(x_test)
    assert probs.shape == (200, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    predicted = clf.predict(x_test)
    assert set(predicted.tolist()) <= {1, 2, 3, 4, 5}
    accuracy = float(np.mean(predicted == y_test))
    assert clf.score(x_test, y_test) == pytest.approx(accuracy)
    assert accuracy > 0.8  # 40 labels of learnable classes
    # unlabelled examples do not count in the score
    masked = np.where(np.arange(200) % 2 == 0, y_test, -1)
    assert clf.score(x_test, masked) == pytest.approx(float(np.mean(predicted[::2] == y_test[::2])))
    # the same loop wrote a run: its settings, its labelled set, and load_run reads it
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == "array" and config["data"]["num_classes"] == 5
    assert clf.summary_["labels"] == 40
    run = load_run(tmp_path / "run")
    np.testing.assert_allclose(run.predict_proba(x_test).numpy(), probs, atol=1e-6)
    assert clf.run.sample(3, y=0).shape == (3, 784)  # the shape X had


def test_bad_input_is_refused(few_labels):
    x, partial, *_ = few_labels
    clf = SSVAEClassifier(**TINY)
    with pytest.raises(ValueError, match="at least two classes"):
        clf.fit(x, np.where(partial == 1, 1, -1))
    with pytest.raises(ValueError, match="one label per example"):
        clf.fit(x, partial[:-1])
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.full_like(x, np.nan), partial)
    with pytest.raises(Exception, match="--likelihood bernoulli needs"):
        clf.fit(x * 255, partial)


def test_works_inside_cross_val_score_and_grid_search(few_labels):
    x, partial, *_ = few_labels
    tiny = dict(TINY, epochs=1)
    scores = cross_val_score(SSVAEClassifier(**tiny), x, partial, cv=2)
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))
    search = GridSearchCV(SSVAEClassifier(**tiny), {"classifier_weight": [0.0, 1.0]}, cv=2)
    search.fit(x, partial)
    assert search.best_params_["classifier_weight"] in (0.0, 1.0)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.predict(x[:4]).shape == (4,)


def test_importing_the_package_does_not_import_sklearn():
    code = ("import sys, ppl_ssvae; assert 'sklearn' not in sys.modules; "
            "ppl_ssvae.SSVAEClassifier; assert 'sklearn' in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
