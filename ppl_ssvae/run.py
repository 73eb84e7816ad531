"""Using a trained run: ``load_run(dir)`` and what ``predict``, ``evaluate`` and
``sample`` do with it.

A run directory is self-describing: ``config.json`` holds every setting and what the
data fixed about the networks (K, the size and shape of one example), and
``checkpoint.pt`` the weights; nothing else is needed to rebuild the pair::

    run = load_run("runs/m2")
    run.predict(x)              # class of each row of x, (N,)
    run.predict_proba(x)        # q(y | x), (N, K)
    run.sample(8, y=3)          # means of p(x | y=3, z), z ~ N(0, I), (8, *shape)
    run.log_marginal(x, 100)    # importance-sampled log p(x), (N,)
    run.model, run.guide        # the Pyro pair, for SVI, Predictive, render_model ...

Inputs are checked against the run before any work: an array of examples of the
training data's shape (or flattened), numbers, finite, and in [0, 1] under the
Bernoulli likelihood; anything else is an ``InputError`` in one line that names what
the run expects.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppl_ssvae import data as data_lib
from ppl_ssvae import evaluate, plots
from ppl_ssvae.batch import one_hot
from ppl_ssvae.checkpoint import load_weights
from ppl_ssvae.config import Settings, SettingsError, check_device, check_seed, settings_from_config
from ppl_ssvae.data import two_digit
from ppl_ssvae.io import atomic_write, figure_writer, prepare_output_dir, write_all, write_text
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.registry import MODELS, UnsupportedError, build

# what runs written before config.json recorded their data had, by --dataset (the
# built-in data sets have fixed shapes; a .npz file's are unknown)
_MNIST_SHAPE = {"num_classes": 10, "x_dim": 784, "shape": [28, 28]}
LEGACY_DATA = {"mnist": _MNIST_SHAPE, "fashion-mnist": _MNIST_SHAPE, "synthetic": _MNIST_SHAPE,
               "two-digit-mnist": {"num_classes": 100, "x_dim": math.prod(two_digit.SHAPE),
                                   "shape": list(two_digit.SHAPE)}}


SAMPLE_CHUNK = 1000  # examples decoded at once by Run.sample_chunks


class InputError(ValueError):
    """Input a run cannot take; the message says what the run expects."""


class RunError(ValueError):
    """A directory that is not a usable run; the message says what to do."""


@dataclass
class Run:
    """A trained model/guide pair with its settings and the shape of its data, as
    `load_run` returns it.

    Its methods take examples as an array or tensor (N, *shape) or (N, D), or one example,
    checked against the run: a shape, type or range the run cannot take raises
    ``InputError`` with what it expects.

    Attributes:
        directory: the run directory.
        settings: the run's resolved `Settings`.
        pair: the trained `SSVAE`.
        num_classes: K.
        shape: the shape of one example.
        data: what the data fixed (``num_classes``, ``x_dim``, ``shape``), from ``config.json``.
    """

    directory: Path
    settings: Settings
    pair: SSVAE
    num_classes: int
    shape: tuple[int, ...]
    data: dict

    @property
    def model(self) -> torch.nn.Module:
        """The Pyro model p(x, y, z, ...): a plain callable taking a ``Batch``."""
        return self.pair.model

    @property
    def guide(self) -> torch.nn.Module:
        """The Pyro guide q(y, z, ... | x)."""
        return self.pair.guide

    @property
    def x_dim(self) -> int:
        return int(np.prod(self.shape))

    @property
    def has_decoder(self) -> bool:
        return hasattr(self.pair.model, "decode")

    def _device(self) -> torch.device:
        return next(self.pair.parameters()).device

    def inputs(self, x, what: str = "the input") -> torch.Tensor:
        """``x`` as a float tensor (N, D) on the run's device, after checking its shape,
        type and range against the run; ``InputError`` otherwise."""
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        expected = (f"examples of shape {tuple(self.shape)} ({self.x_dim} values each), as an "
                    f"array (N, {', '.join(str(s) for s in self.shape)})"
                    + (f" or (N, {self.x_dim})" if len(self.shape) > 1 else ""))
        if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.floating)
                                           or np.issubdtype(array.dtype, np.integer)):
            raise InputError(f"{what} holds values of type {array.dtype}; this run expects "
                             f"numbers: {expected}")
        if array.shape == tuple(self.shape) or array.shape == (self.x_dim,):
            array = array[None]  # one example
        if array.ndim < 2 or array.shape[1:] not in (tuple(self.shape), (self.x_dim,)):
            raise InputError(f"{what} has shape {array.shape}; this run expects {expected}")
        if len(array) == 0:
            raise InputError(f"{what} holds no examples; this run expects {expected}")
        array = np.ascontiguousarray(array.reshape(len(array), -1), dtype=np.float32)
        if not np.isfinite(array).all():
            raise InputError(f"{what} holds NaN or infinite values; this run expects finite "
                             f"numbers")
        if self.settings.likelihood == "bernoulli":
            lo, hi = float(array.min()), float(array.max())
            if lo < 0.0 or hi > 1.0:
                raise InputError(f"{what} has values in [{lo:g}, {hi:g}]; this run (bernoulli "
                                 f"likelihood) expects values in [0, 1], scaled as its training "
                                 f"data were (8-bit images: divide by 255)")
        return torch.from_numpy(array).to(self._device())

    def predict_proba(self, x) -> torch.Tensor:
        """q(y | x) of every example.

        Args:
            x (array or tensor): examples, (N, *shape) or (N, D), or one example.

        Returns:
            Class probabilities, (N, K).

        Raises:
            InputError: ``x`` does not fit the run.
        """
        return evaluate.predict(self.pair, self.inputs(x), self.settings.eval_batch_size)

    def predict(self, x) -> torch.Tensor:
        """The most probable class under q(y | x) of every example.

        Args:
            x (array or tensor): examples, (N, *shape) or (N, D), or one example.

        Returns:
            Class indices, (N,).

        Raises:
            InputError: ``x`` does not fit the run.
        """
        return self.predict_proba(x).argmax(-1)

    def _require_decoder(self, what: str) -> None:
        if not self.has_decoder:
            raise RunError(f"model {self.settings.model!r} has no p(x | y, z), so it cannot "
                           f"{what}: use a run of a generative model (m2, adgm, ...)")

    def sample(self, n: int = 8, y: int | None = None, seed: int = 0) -> torch.Tensor:
        """Means of p(x | y, z) at ``n`` draws z ~ N(0, I).

        Args:
            n: how many.
            y: a class, or ``None`` to draw each from p(y) (uniform).
            seed: seeds the draws of z (and of y).

        Returns:
            Images shaped as the data, (n, *shape).

        Raises:
            InputError: ``y`` is not a class of the run.
            RunError: the model has no p(x | y, z) (``mlp``).
        """
        chunks = list(self.sample_chunks(n, y, seed))
        return torch.cat(chunks).reshape(n, *self.shape)

    def sample_chunks(self, n: int, y: int | None = None, seed: int = 0
                      ) -> Iterator[torch.Tensor]:
        """``sample(n, y, seed)`` flattened, (b, D), in chunks of at most ``SAMPLE_CHUNK``
        examples on the CPU: memory stays bounded whatever ``n``. The z of a class are
        the same for every ``y`` given (``sample_grid``'s columns)."""
        self._require_decoder("sample")
        k = self.num_classes
        if y is not None and not 0 <= y < k:
            raise InputError(f"class {y} is not one of this run's classes 0..{k - 1}")
        if n < 1:
            raise InputError(f"n must be positive, got {n}")
        try:
            check_seed(seed, "seed")
        except SettingsError as e:
            raise InputError(str(e)) from None
        device = self._device()
        g = torch.Generator().manual_seed(seed)
        for start in range(0, n, SAMPLE_CHUNK):
            b = min(SAMPLE_CHUNK, n - start)
            z = torch.randn(b, self.settings.z_dim, generator=g)
            labels = torch.full((b,), y) if y is not None else torch.randint(k, (b,), generator=g)
            with evaluate.evaluation(self.pair):
                images = self.pair.model.decode(z.to(device), one_hot(labels, k).to(device))
            yield images.reshape(b, -1).float().cpu()

    def sample_grid(self, n: int = 8, seed: int = 0) -> torch.Tensor:
        """(K, n, D): n samples of every class, the same z in each column."""
        return torch.stack([torch.cat(list(self.sample_chunks(n, c, seed)))
                            for c in range(self.num_classes)])

    @property
    def exact_in_y(self) -> bool:
        """Whether y can be summed out exactly (the model's y is a discrete latent)."""
        return "enum" in MODELS[self.settings.model].inferences

    def log_marginal(self, x, samples: int = 100, seed: int = 0) -> torch.Tensor:
        """Importance-sampled log p(x) of every example (Burda et al. 2016), exact in y
        where the model can enumerate it.

        Args:
            x (array or tensor): examples, (N, *shape) or (N, D), or one example.
            samples: importance samples per example; 1 gives an ELBO.
            seed: seeds the draws.

        Returns:
            log p(x) in nats, (N,).

        Raises:
            InputError: ``x`` does not fit the run, or ``samples`` < 1.
            RunError: the model has no p(x | y, z) (``mlp``).
        """
        self._require_decoder("score log p(x)")
        if samples < 1:
            raise InputError(f"samples must be positive, got {samples}")
        return evaluate.log_marginal(self.pair, self.inputs(x), samples, self.exact_in_y,
                                     seed).cpu()


def load_run(directory: str | Path, device: str = "cpu", which: str = "best") -> Run:
    """The run trained into ``directory``: its settings and the pair with its weights.

    A run directory is self-describing: ``config.json`` and the checkpoint are enough to
    rebuild the pair, with nothing else that the run already knows.

    Args:
        directory: the ``--out`` of a ``ppl-ssvae train`` run.
        device: where to put the pair (``"cpu"``, ``"cuda"``).
        which: ``"best"`` (the default): the best-validation weights (``best.pt``), those
            ``summary.json``'s ``test_accuracy`` describes; ``"last"``: the last
            checkpoint's. A run without ``best.pt`` (written before it was kept) gets the
            last weights.

    Returns:
        The `Run`, in evaluation mode.

    Raises:
        RunError: ``directory`` is not a usable run (no ``config.json`` or checkpoint,
            unreadable files); the message says what to do.
        CheckpointError: the weights do not fit the pair the settings describe.

    Example:
        ```python
        run = ppl_ssvae.load_run("runs/m2")
        run.predict(x)              # class of each row of x, (N,)
        run.sample(8, y=3)          # means of p(x | y=3, z), z ~ N(0, I)
        ```
    """
    directory = Path(directory)
    config_path, checkpoint = directory / "config.json", directory / "checkpoint.pt"
    if not config_path.is_file():
        raise RunError(f"{directory} is not a run directory (no config.json): give the --out "
                       f"of a `ppl-ssvae train` run")
    if not checkpoint.is_file():
        raise RunError(f"{directory} has no checkpoint.pt: train into it first (ppl-ssvae "
                       f"train --out {directory})")
    check_device(device)  # as train checks it: SettingsError, naming --device
    if which not in ("best", "last"):
        raise RunError(f"which must be 'best' or 'last', got {which!r}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{config_path} is not readable JSON ({e}): restore it from the run") from None
    try:  # a file edited by hand is checked as the command line is
        settings = settings_from_config(config).replace(device=device)
    except SettingsError as e:
        raise RunError(f"{config_path} does not hold settings a run can use ({e}): fix that "
                       f"value, or restore the file from the run") from None
    info = config.get("data") or LEGACY_DATA.get(settings.dataset)
    if info is None:
        raise RunError(f"{config_path} does not record its data's shape (written before "
                       f"ppl-ssvae recorded it) and --dataset {settings.dataset} has no fixed "
                       f"one: add to it \"data\": {{\"num_classes\": K, \"x_dim\": D, "
                       f"\"shape\": [D]}}")
    _check_data_info(info, config_path)
    try:
        pair = build(settings, info["num_classes"], info["x_dim"])
    except UnsupportedError as e:
        raise RunError(f"{config_path}: {e}") from None
    load_weights(pair, directory, which)  # one-line CheckpointError if they do not fit
    pair.to(device).eval()
    return Run(directory, settings, pair, int(info["num_classes"]),
               tuple(int(s) for s in info["shape"]), info)


def _check_data_info(info, config_path: Path) -> None:
    """The ``data`` entry of a config.json: K >= 2 classes, D >= 1 values an example,
    a shape of positive sizes whose product is D."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    problem = None
    if not isinstance(info, dict):
        problem = f"\"data\" is {info!r}, not an object"
    elif not whole(info.get("num_classes")) or info["num_classes"] < 2:
        problem = f"data.num_classes must be an integer of 2 or more, got {info.get('num_classes')!r}"
    elif not whole(info.get("x_dim")) or info["x_dim"] < 1:
        problem = f"data.x_dim must be a positive integer, got {info.get('x_dim')!r}"
    elif (not isinstance(info.get("shape"), list) or not info["shape"]
          or not all(whole(s) and s > 0 for s in info["shape"])
          or math.prod(info["shape"]) != info["x_dim"]):
        problem = (f"data.shape must be a list of positive sizes whose product is data.x_dim "
                   f"({info['x_dim']}), got {info.get('shape')!r}")
    if problem:
        raise RunError(f"{config_path} does not describe the run's data ({problem}): fix that "
                       f"value, or restore the file from the run")


# --------------------------------------------------------------------------- the commands

def read_inputs(path: str | Path) -> np.ndarray:
    """The examples in a ``.npy`` file, a ``.npz`` file (its array ``x``, or its only
    array), or an IDX ``.gz`` file of 8-bit images (scaled to [0, 1])."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--input {path} is a directory: give a .npy, .npz or IDX .gz file")
    if not path.is_file():
        raise InputError(f"--input {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            return data_lib.npz.read_npy(path)
        if name.endswith(".npz"):
            arrays = data_lib.npz.read_arrays(path)
            if "x" in arrays:
                return arrays["x"]
            if len(arrays) == 1:
                return next(iter(arrays.values()))
            raise InputError(f"{path} holds the arrays {', '.join(arrays)}: name the examples x")
        if name.endswith(".gz"):
            return data_lib.read_idx(path).astype(np.float32) / 255.0
    except data_lib.DataError as e:
        raise InputError(str(e)) from None
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path} is not a readable .npy file ({first})") from None
    raise InputError(f"--input {path}: give a .npy, .npz or IDX .gz file")


def write_predictions(run: Run, x, out: str | Path) -> torch.Tensor:
    """One CSV row per example: index, predicted label, the probability of every class."""
    probs = run.predict_proba(x).cpu()
    k = probs.shape[1]
    lines = ["index,label," + ",".join(f"p{c}" for c in range(k))]
    for i, (row, label) in enumerate(zip(probs.tolist(), probs.argmax(-1).tolist(), strict=True)):
        lines.append(f"{i},{label}," + ",".join(f"{p:.6g}" for p in row))
    write_text(out, "\n".join(lines) + "\n")
    return probs


def evaluate_run(run: Run, split: str = "test", samples: int = 100, data_dir: str | None = None,
                 max_images: int | None = None, seed: int = 0) -> dict:
    """Every measurement of ``run`` on a split of its data, written to the run directory as
    ``evaluation.json`` (``evaluation-SPLIT.json`` for another split than test) and figures
    ``confusion_matrix.png`` and ``latent_pca.png``; returns what it wrote."""
    if split not in ("train", "valid", "test"):
        raise InputError(f"--split takes train, valid or test, got {split!r}")
    started = time.perf_counter()
    settings = run.settings
    if settings.dataset == "array":
        raise RunError(f"{run.directory} was trained on arrays in memory: evaluate it from "
                       f"Python, with run.predict and run.log_marginal on your data")
    try:
        check_seed(seed)
    except SettingsError as e:
        raise InputError(str(e)) from None
    if settings.dataset.endswith(".npz") and not Path(settings.dataset).is_file():
        raise RunError(f"{run.directory} was trained on {settings.dataset}, which is no longer "
                       f"there: put the file back at that path (or edit \"dataset\" in "
                       f"{run.directory / 'config.json'} to where it is now), or measure the "
                       f"run from Python with load_run(...).predict on your data")
    data = data_lib.load(settings.dataset, data_dir or settings.data_dir, settings.seed)
    part = getattr(data, split)
    x, y = part.x, part.y
    labelled = y >= 0
    x, y = x[labelled], y[labelled]  # the training split may hold unlabelled examples
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    x = run.inputs(x, f"the {split} split of {settings.dataset}")
    y = y.to(x.device)
    k = run.num_classes
    predicted = evaluate.predict(run.pair, x, settings.eval_batch_size).argmax(-1)
    counts = torch.bincount(y * k + predicted, minlength=k * k).reshape(k, k).cpu()
    per_class = (counts.diag() / counts.sum(1).clamp(min=1)).tolist()
    result = {
        "split": split, "images": len(x), "dataset": settings.dataset,
        "model": settings.model, "inference": settings.inference,
        "accuracy": float((predicted == y).float().mean()),
        "per_class_accuracy": per_class, "confusion_matrix": counts.tolist(),
    }
    prefix = "" if split == "test" else f"-{split}"
    out = prepare_output_dir(run.directory, f"--run {run.directory}",
                             "copy the run to a writable directory and evaluate the copy")
    name = f"{settings.model} / {settings.inference}, {settings.dataset} {split}"
    figures = {}  # drawn first, written with evaluation.json at the end: all or none
    try:
        figures[out / f"confusion_matrix{prefix}.png"] = plots.confusion_matrix(
            counts, None, f"{name}: accuracy {100 * result['accuracy']:.2f}%")
        if run.has_decoder:
            _measure_decoder(run, x, y, samples, seed, result, name, split, figures,
                             out / f"latent_pca{prefix}.png")
        result["seconds"] = time.perf_counter() - started
        text = (json.dumps(result, indent=2, sort_keys=True) + "\n").encode()
        write_all({**{path: figure_writer(fig, dpi=150) for path, fig in figures.items()},
                   out / f"evaluation{prefix}.json": lambda f: f.write(text)})
    finally:
        for fig in figures.values():
            plots.close(fig)
    return result


def _measure_decoder(run: Run, x: torch.Tensor, y: torch.Tensor, samples: int, seed: int,
                     result: dict, name: str, split: str, figures: dict, latent_path: Path
                     ) -> None:
    """evaluate_run's measurements of a generative model: ELBO, log p(x), the latent
    figure (into ``figures``)."""
    settings = run.settings
    g = torch.Generator(device=x.device).manual_seed(seed)
    scored = data_lib.binarize(x, g) if settings.binarize else x  # fixed by the seed
    result["elbo_per_image"] = evaluate.elbo_per_image(
        run.pair, scored, max(1, settings.eval_batch_size // 2), seed, run.exact_in_y)
    log_px = evaluate.log_marginal(run.pair, scored, samples, run.exact_in_y, seed)
    result.update(log_px_per_image=float(log_px.mean()), samples=samples,
                  exact_in_y=run.exact_in_y, binarized=settings.binarize)
    means = evaluate.latent_means(run.pair, x, y, settings.eval_batch_size)
    figures[latent_path] = plots.latent_scatter(
        evaluate.pca_2d(means), y, None, f"means of q(z | x, y) of the {split} images, "
        f"first two principal axes: {name}")


def write_samples(run: Run, out: str | Path, y: int | None = None, n: int = 8,
                  seed: int = 0) -> None:
    """Samples of ``run`` into ``out``: a figure (.png, .svg, .pdf) of n of class ``y`` in
    a row, or a row of n for every class (the same z in each column) when ``y`` is None;
    or a ``.npy`` array, (n, *shape) for one class, (K, n, *shape) for every class,
    written in chunks, so that memory stays bounded whatever n."""
    settings = run.settings
    if str(out).lower().endswith(".npy"):
        classes = [y] if y is not None else list(range(run.num_classes))
        shape = ((n,) if y is not None else (run.num_classes, n)) + tuple(run.shape)
        next(run.sample_chunks(1, classes[0], seed))  # refuse a bad class before writing

        def write(f) -> None:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                    "fortran_order": False, "shape": shape})
            for c in classes:
                for chunk in run.sample_chunks(n, c, seed):
                    f.write(chunk.numpy().astype(np.float32, copy=False).tobytes())

        atomic_write(out, write)
        return
    name = f"{settings.model} / {settings.inference}"
    if y is None:
        images = run.sample_grid(n, seed)
        title = f"p(x | y, z), one row per class, the same z in each column: {name}"
        rows = None
    else:
        images = run.sample(n, y, seed).reshape(1, n, -1)
        title, rows = f"p(x | y = {y}, z), z ~ N(0, I): {name}", [str(y)]
    plots.class_samples(images, out, title, run.shape, rows)
