"""Reliability of what uses a trained run (issue 25): ``predict``, ``evaluate`` and
``sample``, ``.npz`` data, a run's ``config.json`` edited by hand, and the scikit-learn
estimator. Every case either works or ends in one line that says what to do (exit 2);
nothing is lost or overwritten, and memory stays bounded."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clitools import FAST, assert_error, one_thread, train_cli  # noqa: F401 (fixture)
from ppl_ssvae import run as run_lib
from ppl_ssvae.cli import main
from ppl_ssvae.data import DataError, load, load_npz
from ppl_ssvae.io import WriteError, write_text

TINY_RUN = [*FAST, "--hidden", "16", "--max-steps", "3"]


def everything_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A three-step run of M2 on synthetic MNIST-shaped data, with its figures."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY_RUN, "--figures", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def command(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- 1. lost data

def test_resume_without_the_checkpoint_refuses_and_keeps_every_file(capsys, run_copy):
    (run_copy / "checkpoint.pt").unlink()
    before = everything_in(run_copy)
    assert "best.pt" in before and "summary.json" in before
    assert_error(*train_cli(capsys, "--hidden", "16", "--max-steps", "3", "--resume", "--out",
                            str(run_copy)),
                 "but not its checkpoint.pt", "put checkpoint.pt back, or choose another --out")
    after = everything_in(run_copy)
    assert after.keys() - {".ppl-ssvae.lock"} == before.keys() - {".ppl-ssvae.lock"}
    assert all(after[name] == before[name] for name in before if name != ".ppl-ssvae.lock")


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it(capsys, tmp_path):
    """config.json and an empty metrics.jsonl (what a run leaves before its first
    checkpoint; and best.pt where a full disk failed that checkpoint) lose nothing when
    --resume starts over."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")
    (out / "best.pt").write_bytes(b"from a run that never wrote its checkpoint")
    code, err = train_cli(capsys, "--hidden", "16", "--max-steps", "1", "--resume", "--out",
                          str(out))
    assert code == 0, err
    assert (out / "checkpoint.pt").is_file()


def predict(capsys, run: Path, source: Path, out) -> tuple[int, str]:
    return command(capsys, "predict", "--run", str(run), "--input", str(source), "--out", str(out))


@pytest.mark.parametrize("case, phrases", [
    ("device-file", ["is not a regular file"]),
    ("directory", ["is a directory"]),
    ("the-input", ["is the --input file"]),
    ("checkpoint", ["is one of a training run's own files"]),
    ("checkpoint-by-link", ["is one of a training run's own files"]),
    ("suffix", ["give a .csv file name"]),
])
def test_predict_refuses_an_out_it_would_destroy(capsys, run_copy, tmp_path, case, phrases):
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((2, 784), np.float32))
    out = tmp_path / "p.csv"
    if case == "device-file":
        out.symlink_to("/dev/full")
    elif case == "directory":
        out.mkdir()
    elif case == "the-input":
        out.symlink_to(source)
    elif case == "checkpoint":
        out = run_copy / "checkpoint.pt"
    elif case == "checkpoint-by-link":
        out.symlink_to(run_copy / "checkpoint.pt")
    elif case == "suffix":
        out = tmp_path / "p.npy"
    before = everything_in(run_copy)
    assert_error(*predict(capsys, run_copy, source, out), *phrases)
    assert everything_in(run_copy) == before
    assert np.load(source).shape == (2, 784)
    assert Path("/dev/full").is_char_device()


def test_sample_refuses_an_out_it_would_destroy(capsys, run_copy, tmp_path):
    samples = (run_copy / "samples.png").read_bytes()
    assert_error(*command(capsys, "sample", "--run", str(run_copy), "--out",
                          str(run_copy / "samples.png")), "one of a training run's own files")
    assert (run_copy / "samples.png").read_bytes() == samples
    (tmp_path / "d.png").mkdir()
    assert_error(*command(capsys, "sample", "--run", str(run_copy), "--out",
                          str(tmp_path / "d.png")), "is a directory")


def test_evaluate_writes_for_a_single_image(capsys, run_copy):
    code, err = command(capsys, "evaluate", "--run", str(run_copy), "--samples", "2",
                        "--max-images", "1")
    assert code == 0, err
    result = json.loads((run_copy / "evaluation.json").read_text())
    assert result["images"] == 1
    assert (run_copy / "latent_pca.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_writes_all_its_outputs_or_none(capsys, run_copy, monkeypatch):
    assert command(capsys, "evaluate", "--run", str(run_copy), "--samples", "2",
                   "--max-images", "50")[0] == 0
    before = everything_in(run_copy)

    def broken(*args, **kwargs):
        raise RuntimeError("the latent figure failed")

    monkeypatch.setattr(run_lib.plots, "latent_scatter", broken)
    with pytest.raises(RuntimeError, match="latent figure"):
        main(["evaluate", "--run", str(run_copy), "--samples", "3", "--max-images", "20"])
    assert everything_in(run_copy) == before  # confusion_matrix.png was not rewritten
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- 2. memory

def test_sample_draws_in_chunks_into_an_array_file(capsys, trained, tmp_path, monkeypatch):
    monkeypatch.setattr(run_lib, "SAMPLE_CHUNK", 7)
    sizes = []
    decode = run_lib.Run.sample_chunks

    def counting(self, n, y=None, seed=0):
        original = self.pair.model.decode

        def watched(z, y_):
            sizes.append(len(z))
            return original(z, y_)

        self.pair.model.decode = watched
        try:
            yield from decode(self, n, y, seed)
        finally:
            del self.pair.model.decode

    monkeypatch.setattr(run_lib.Run, "sample_chunks", counting)
    out = tmp_path / "s.npy"
    code, err = command(capsys, "sample", "--run", str(trained), "--n", "30", "--out", str(out))
    assert code == 0, err
    images = np.load(out)
    assert images.shape == (10, 30, 28, 28) and images.dtype == np.float32
    assert max(sizes) <= 7  # never the whole draw at once
    run = run_lib.load_run(trained)
    np.testing.assert_allclose(images.reshape(10, 30, -1), run.sample_grid(30).numpy(), atol=1e-6)
    one = tmp_path / "one.npy"
    assert command(capsys, "sample", "--run", str(trained), "--n", "9", "--class", "3",
                   "--out", str(one))[0] == 0
    assert np.load(one).shape == (9, 28, 28)


def test_sample_into_a_figure_has_a_limit_and_says_how_to_get_more(capsys, trained, tmp_path):
    assert_error(*command(capsys, "sample", "--run", str(trained), "--n", "100000", "--out",
                          str(tmp_path / "s.png")), "--n 100000", "give --out FILE.npy")
    assert not (tmp_path / "s.png").exists()


def npz_with_header(path: Path, name: str, shape: tuple[int, ...], payload: bytes = b"\0" * 16,
                    compress: int = zipfile.ZIP_STORED) -> None:
    """A .npz whose member ``name`` claims ``shape`` but holds ``payload``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr(f"{name}.npy", header.getvalue() + payload)
        labels = io.BytesIO()
        np.save(labels, np.zeros(2, np.int64))
        archive.writestr("y.npy", labels.getvalue())


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, compress):
    path = tmp_path / "huge.npz"
    npz_with_header(path, "x", (10**7, 10**6), compress=compress)
    with pytest.raises(DataError, match="claims shape"):
        load_npz(path)


def test_npy_input_claiming_a_huge_shape_is_refused(capsys, trained, tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (10**8, 784)})
        f.write(b"\0" * 64)
    assert_error(*predict(capsys, trained, path, tmp_path / "p.csv"), "claims an array of shape",
                 "truncated or damaged")


def test_labels_of_ten_to_the_twelve_are_refused_without_a_count_per_class(tmp_path):
    path = tmp_path / "big-label.npz"
    np.savez(path, x=np.zeros((40, 3)), y=np.array([0, 1] * 19 + [10**12, -1]))
    with pytest.raises(DataError, match="class 2 has no labelled example"):
        load_npz(path)


# --------------------------------------------------------------------------- 3. one line

def test_a_temporary_file_that_cannot_be_created_is_one_write_error():
    with pytest.raises(WriteError, match="cannot write /proc/ppl-ssvae-test.txt"):
        write_text("/proc/ppl-ssvae-test.txt", "x")


def test_predict_into_proc_is_one_line(capsys, trained, tmp_path):
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((2, 784), np.float32))
    assert_error(*predict(capsys, trained, source, "/proc/p.csv"), "cannot write /proc/p.csv")


@pytest.mark.parametrize("change, phrase", [
    (lambda c: c.update(z_dim="eight"), "--z-dim takes an integer"),
    (lambda c: c.update(hidden="64"), "--hidden takes a list of integers"),
    (lambda c: c["data"].update(num_classes="ten"), "data.num_classes"),
    (lambda c: c["data"].pop("x_dim"), "data.x_dim"),
    (lambda c: c.update(z_dim=-1), "--z-dim must be positive"),
    (lambda c: c.update(likelihood="poisson"), "--likelihood takes"),
    (lambda c: c["data"].update(shape=[28, 29]), "data.shape"),
    ("list", "not the object of a run's settings"),
])
@pytest.mark.parametrize("use", ["sample", "predict", "evaluate"])
def test_a_config_edited_by_hand_is_checked_as_the_command_line(capsys, run_copy, tmp_path,
                                                                change, phrase, use):
    path = run_copy / "config.json"
    config = json.loads(path.read_text())
    if change == "list":
        config = [config]
    else:
        change(config)
    path.write_text(json.dumps(config))
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    argv = {"sample": ["--out", str(tmp_path / "s.png")],
            "predict": ["--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.csv")],
            "evaluate": []}[use]
    assert_error(*command(capsys, use, "--run", str(run_copy), *argv), f"{path}", phrase,
                 "fix that value, or restore the file")


@pytest.mark.parametrize("use", ["sample", "predict", "evaluate"])
@pytest.mark.parametrize("device, phrase", [
    ("tpu", "--device takes cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:7", "--device"),
])
def test_device_is_checked_as_train_checks_it(capsys, trained, tmp_path, use, device, phrase):
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    argv = {"sample": ["--out", str(tmp_path / "s.png")],
            "predict": ["--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.csv")],
            "evaluate": []}[use]
    assert_error(*command(capsys, use, "--run", str(trained), "--device", device, *argv), phrase)


@pytest.mark.parametrize("use", ["sample", "evaluate"])
@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_seed_beyond_its_range_is_one_line(capsys, trained, tmp_path, use, seed):
    argv = ["--out", str(tmp_path / "s.png")] if use == "sample" else []
    assert_error(*command(capsys, use, "--run", str(trained), "--seed", seed, *argv),
                 "--seed must lie in 0..4294967295")


def test_npz_edge_cases_are_refused_in_one_line(tmp_path):
    renamed = tmp_path / "renamed.npz"
    np.save(tmp_path / "a.npy", np.zeros((3, 4)))
    (tmp_path / "a.npy").rename(renamed)
    with pytest.raises(DataError, match="holds a single array"):
        load_npz(renamed)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((4, 0)), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"with N, D, H, W > 0, got \(4, 0\)"):
        load_npz(empty)


def gaussian_npz(path: Path) -> Path:
    """Real-valued examples of shape (1, 10500): one row of a figure 10,500 cells wide,
    more pixels than matplotlib draws unless the figure's size is bounded."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1, 10500)).astype(np.float32) * 5.0
    y = np.full(200, -1)
    y[:40] = np.arange(40) % 2
    np.savez(path, x=x, y=y)
    return path


def test_a_gaussian_run_writes_its_figures_and_can_be_sampled(capsys, tmp_path):
    data = gaussian_npz(tmp_path / "real.npz")
    out = tmp_path / "run"
    code, err = command(capsys, "train", *FAST, "--dataset", str(data), "--likelihood", "gaussian",
                        "--no-binarize", "--hidden", "8", "--max-steps", "2", "--figures",
                        "--out", str(out))
    assert code == 0, err
    for name in ("samples.png", "learning_curves.png", "kl_per_dim.png", "summary.json"):
        assert (out / name).is_file()
    assert command(capsys, "sample", "--run", str(out), "--out", str(tmp_path / "s.png"))[0] == 0
    assert command(capsys, "evaluate", "--run", str(out), "--samples", "2")[0] == 0
    # 6. a run whose .npz is gone is told what to do, not to give a path it cannot give
    data.unlink()
    line = assert_error(*command(capsys, "evaluate", "--run", str(out)), "is no longer there",
                        "put the file back")
    assert "give the path" not in line


# --------------------------------------------------------------------------- 6. messages

def test_a_directory_as_input_or_dataset_is_called_a_directory(capsys, trained, tmp_path):
    (tmp_path / "d.npy").mkdir()
    assert_error(*predict(capsys, trained, tmp_path / "d.npy", tmp_path / "p.csv"),
                 "is a directory")
    (tmp_path / "data.npz").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load(str(tmp_path / "data.npz"))
    with pytest.raises(DataError, match="is a directory: give a .npz file, or one of"):
        load(str(tmp_path))


def test_a_text_file_named_npz_or_npy_gets_no_pickle_advice(capsys, trained, tmp_path):
    (tmp_path / "t.npz").write_text("0 1 2\n")
    (tmp_path / "t.npy").write_text("0 1 2\n")
    with pytest.raises(DataError, match="is not a .npz file") as caught:
        load_npz(tmp_path / "t.npz")
    assert "pickle" not in str(caught.value)
    line = assert_error(*predict(capsys, trained, tmp_path / "t.npy", tmp_path / "p.csv"),
                        "is not a .npy file")
    assert "pickle" not in line


def test_fashion_mnist_names_the_variable_that_is_a_file(capsys, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PPL_SSVAE_DATA", str(tmp_path / "file"))
    line = assert_error(*train_cli(capsys, "--dataset", "fashion-mnist", "--out",
                                   str(tmp_path / "run")), "PPL_SSVAE_DATA")
    assert "--data-dir" not in line


def test_evaluate_on_a_run_it_cannot_write_names_the_run(capsys, trained, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    line = assert_error(*command(capsys, "evaluate", "--run", str(trained), "--max-images", "5"),
                        f"--run {trained} is not writable", "copy the run")
    assert "--out" not in line


def test_float64_values_beyond_float32_are_refused_at_load(tmp_path):
    path = tmp_path / "wide.npz"
    x = np.ones((40, 3))
    x[7, 1] = 1e300
    np.savez(path, x=x, y=np.array([0, 1] * 20))
    with pytest.raises(DataError, match="beyond float32's range .* first in example 7"):
        load_npz(path)


# --------------------------------------------------------------------------- 7. small things

def test_bad_data_is_refused_before_out_is_created(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3)), y=np.array([0, 0, 0, 0]))
    out = tmp_path / "never"
    assert_error(*train_cli(capsys, "--dataset", str(bad), "--out", str(out)), "two classes")
    assert not out.exists()


def test_a_max_steps_run_reports_its_accuracy_and_the_progress_shows_it(capsys, tmp_path):
    out = tmp_path / "run"
    code, err = train_cli(capsys, "--hidden", "16", "--max-steps", "2", "--progress", "--out",
                          str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["partial"] and summary["final_valid_accuracy"] == rows[-1]["valid_accuracy"]
    stopped = [line for line in err.splitlines() if "stopped" in line]
    assert stopped, err
    assert f"best_acc={rows[-1]['valid_accuracy']:.3f}" in stopped[0], stopped[0]
    assert "best_acc=0.000" not in err


def test_import_ppl_ssvae_train_gives_the_module_and_calling_it_still_trains():
    code = ("import types, ppl_ssvae, ppl_ssvae.train as t; "
            "assert isinstance(t, types.ModuleType) and t.__name__ == 'ppl_ssvae.train'; "
            "assert callable(t.train) and callable(ppl_ssvae.train); "
            "from ppl_ssvae import train; assert train is t")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# --------------------------------------------------------------------------- 4, 5. the estimator

sklearn = pytest.importorskip("sklearn")
TINY_FIT = {"hidden": (8,), "z_dim": 2, "epochs": 1, "batch_size": 100, "labelled_batch_size": 20,
            "eval_batch_size": 500, "activation": "softplus", "batch_norm": False}


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = np.clip(rng.random((120, 6)) * 0.3 + y[:, None] * 0.6, 0, 1).astype(np.float32)
    partial = np.where(np.arange(120) < 20, y, -1)
    return x, partial, y


@pytest.mark.parametrize("labels, phrase", [
    (lambda p: np.where(p == -1, np.nan, p.astype(float)), "mark an unknown label with -1"),
    (lambda p: np.where(p == -1, "-1", np.where(p == 0, "cat", "dog")), "holds strings"),
    (lambda p: np.array(["-1" if v == -1 else str(v) for v in p], dtype=object), "string '-1'"),
    (lambda p: np.array([None if v == -1 else "a" if v else "b" for v in p], dtype=object),
     "None"),
    (lambda p: np.where(p == -1, -1.0, p + 0.5), "not whole numbers"),
])
def test_fit_refuses_labels_that_are_not_classes_or_the_unknown_mark(small_data, labels, phrase):
    from ppl_ssvae import SSVAEClassifier

    x, partial, _ = small_data
    with pytest.raises(ValueError, match=phrase):
        SSVAEClassifier(**TINY_FIT).fit(x, labels(partial))


def test_string_classes_with_the_integer_minus_one_for_unknown(small_data):
    from ppl_ssvae import SSVAEClassifier

    x, partial, _ = small_data
    names = np.array([-1 if v == -1 else ("cat", "dog")[v] for v in partial], dtype=object)
    clf = SSVAEClassifier(**TINY_FIT).fit(x, names)
    assert clf.classes_.tolist() == ["cat", "dog"]
    assert set(clf.predict(x).tolist()) <= {"cat", "dog"}
    floats = SSVAEClassifier(**TINY_FIT).fit(x, partial.astype(float))
    assert floats.classes_.tolist() == [0.0, 1.0]


def test_not_fitted_is_sklearns_not_fitted_error(small_data):
    from sklearn.exceptions import NotFittedError

    from ppl_ssvae import SSVAEClassifier

    x, partial, y = small_data
    clf = SSVAEClassifier(**TINY_FIT)
    for call in (lambda: clf.predict(x), lambda: clf.predict_proba(x),
                 lambda: clf.score(x, y), lambda: clf.score(x, np.full(len(x), -1))):
        with pytest.raises(NotFittedError):
            call()


def test_fitting_twice_into_one_out_says_which_parameter_to_change(small_data, tmp_path):
    from ppl_ssvae import SSVAEClassifier

    x, partial, _ = small_data
    clf = SSVAEClassifier(**TINY_FIT, out=str(tmp_path / "run"))
    clf.fit(x, partial)
    before = everything_in(tmp_path / "run")
    with pytest.raises(ValueError, match="set out to a new directory") as caught:
        clf.fit(x, partial)
    assert "--resume" not in str(caught.value)
    assert everything_in(tmp_path / "run") == before
    assert clf.predict(x).shape == (len(x),)  # still the first fit


def test_a_fitted_estimator_pickles_and_predicts_identically_in_a_new_process(small_data,
                                                                             tmp_path):
    import joblib

    from ppl_ssvae import SSVAEClassifier

    x, partial, _ = small_data
    clf = SSVAEClassifier(**TINY_FIT).fit(x, partial)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", clf.predict_proba(x))
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(clf))
    joblib.dump(clf, tmp_path / "clf.joblib")
    code = (
        "import pickle, sys, joblib, numpy as np\n"
        "d = sys.argv[1]\n"
        "x, expected = np.load(d + '/x.npy'), np.load(d + '/expected.npy')\n"
        "for clf in (pickle.load(open(d + '/clf.pkl', 'rb')), joblib.load(d + '/clf.joblib')):\n"
        "    assert np.array_equal(clf.predict_proba(x), expected)\n"
        "    assert clf.predict(x).tolist() == clf.classes_[expected.argmax(1)].tolist()\n"
        "    assert clf.run.sample(2, y=0).shape == (2, 6)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert math.isclose(pickle.loads(pickle.dumps(clf)).score(x, partial), clf.score(x, partial))

