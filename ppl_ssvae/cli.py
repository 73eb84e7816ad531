"""The ``ppl-ssvae`` command: ``train``, ``list`` and the other subcommands.

The options of ``train`` are generated from ``Settings``, so every setting has
a flag and ``--help`` documents it. Errors a user can fix print one line and
exit with status 2; a run stopped by a non-finite loss or gradient exits with 3;
Ctrl-C exits with 130, and output to a pipe closed early (``| head``) with 141,
as a process killed by SIGPIPE would, once the outputs are written.
Under torchrun every rank runs ``train`` and fails alike; rank 0 alone prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing

from ppl_ssvae.config import Settings, SettingsError
from ppl_ssvae.data import DataError

EXIT_USAGE = 2  # bad input: the message says what to change
EXIT_NUMERICAL_FAULT = 3  # a non-finite loss or gradient stopped training
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
MAX_FIGURE_SAMPLES = 100  # sample --n into a figure: a row of more is unreadable


class UserError(Exception):
    """Any error whose message tells the user what to do."""


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.replace(" ", "").split(",") if w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 500 or 300,300, got {text!r}") from None
    return widths


def _base_type(annotation) -> type:
    """``int | None`` -> ``int``; the annotations are strings under __future__ annotations."""
    hint = eval(annotation, vars(typing)) if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_settings_arguments(parser: argparse.ArgumentParser, defaults: Settings | None = None):
    defaults = defaults or Settings()
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "")  # the formatter adds "(default: ...)"
        kind = _base_type(f.type)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif f.name == "hidden":
            parser.add_argument(flag, type=_parse_hidden, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)})


def cmd_train(args: argparse.Namespace) -> int:
    from ppl_ssvae.distributed import is_main
    from ppl_ssvae.train import train

    summary = train(settings_from_args(args))
    if is_main():
        print(json.dumps(summary, indent=2))
        print(f"outputs and figures are in {args.out}/")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ppl_ssvae.registry import inference_table, table

    rows = table()
    width = max(len(name) for name, _, _ in rows)
    inference_width = max(len(inferences) for _, inferences, _ in rows)
    for name, inferences, description in rows:
        print(f"{name:<{width}}  {inferences:<{inference_width}}  {description}")
    methods = inference_table()
    widths = [max(len(row[i]) for row in methods) for i in range(3)]
    widths[1], widths[2] = max(widths[1], len("passes")), max(widths[2], len("defaults"))
    header = f"\n{'inference':<{widths[0]}}  {'passes':<{widths[1]}}  {'defaults':<{widths[2]}}"
    print(header + "  description" if args.verbose else header.rstrip())
    for name, passes, defaults, description in methods:
        line = f"{name:<{widths[0]}}  {passes:<{widths[1]}}  {defaults:<{widths[2]}}"
        print(line + f"  {description}" if args.verbose else line.rstrip())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ppl_ssvae import bench

    return bench.main(args)


def cmd_render(args: argparse.Namespace) -> int:
    from ppl_ssvae.render import RenderError, render, render_all

    try:
        if args.model == "all":
            paths = render_all(args.out, args.format, guide=True)
        else:
            render(args.model, args.inference, args.guide, args.out)
            paths = [args.out]
    except RenderError as e:
        raise UserError(str(e)) from None
    for path in paths:
        print(path)
    return 0


def _writable(path: str) -> str:
    from pathlib import Path

    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UserError(f"--out {path}: the directory {parent} does not exist: create it first")
    return path


# what a training run or an evaluation writes into its directory: never an output of
# predict or sample
_RUN_FILE_NAMES = ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "best.pt",
                   "evaluations.jsonl", "learning_curves.png", "kl_per_dim.png", "samples.png")
_RUN_FILE_PREFIXES = ("evaluation", "confusion_matrix", "latent_pca")


def _output_file(path: str, suffixes: tuple[str, ...], what: str, run: str,
                 source: str | None = None) -> str:
    """``--out`` of predict or sample: a new path or a regular file, with a suffix of its
    format, that is neither the input nor one of a run's own files; refused in one line
    before any work, so that the rename at the end replaces nothing it should not."""
    from pathlib import Path

    target = Path(path)
    if os.path.lexists(target) and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file"
        raise UserError(f"--out {path} is {kind}: give the path of a new or a regular file")
    resolved = target.resolve()
    if source is not None and os.path.exists(source) and resolved == Path(source).resolve():
        raise UserError(f"--out {path} is the --input file: give another file name")
    directory = resolved.parent
    name = resolved.name
    in_a_run = (directory / "config.json").is_file() or directory == Path(run).resolve()
    if in_a_run and (name in _RUN_FILE_NAMES or name.startswith(_RUN_FILE_PREFIXES)
                     or name.endswith(".pt")):
        raise UserError(f"--out {path} is one of a training run's own files: give another "
                        f"file name")
    if not target.name.lower().endswith(suffixes):
        raise UserError(f"--out {path}: give {what}")
    return _writable(path)


def _seed(seed: int) -> int:
    from ppl_ssvae.config import check_seed

    check_seed(seed)
    return seed


def cmd_predict(args: argparse.Namespace) -> int:
    from ppl_ssvae.run import load_run, read_inputs, write_predictions

    out = _output_file(args.out, (".csv",), "a .csv file name", args.run, args.input)
    run = load_run(args.run, args.device, args.weights)
    x = read_inputs(args.input)
    probs = write_predictions(run, run.inputs(x, args.input), out)
    print(f"{len(probs)} predictions of {run.num_classes} classes written to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ppl_ssvae.run import evaluate_run, load_run

    if args.samples < 1:
        raise UserError(f"--samples must be positive, got {args.samples}")
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images must be positive, got {args.max_images}")
    _seed(args.seed)
    run = load_run(args.run, args.device, args.weights)
    result = evaluate_run(run, args.split, args.samples, args.data_dir, args.max_images,
                          args.seed)
    shown = {k: v for k, v in result.items() if k not in ("confusion_matrix",
                                                           "per_class_accuracy")}
    print(json.dumps(shown, indent=2))
    print(f"evaluation and figures are in {args.run}/")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ppl_ssvae.run import load_run, write_samples

    if args.n < 1:
        raise UserError(f"--n must be positive, got {args.n}")
    _seed(args.seed)
    out = _output_file(args.out, (".png", ".svg", ".pdf", ".npy"),
                       "a .png (or .svg, .pdf) file name, or .npy for the images as an "
                       "array", args.run)
    figure = not out.lower().endswith(".npy")
    if figure and args.n > MAX_FIGURE_SAMPLES:
        raise UserError(f"--n {args.n} is more samples than a figure shows (at most "
                        f"{MAX_FIGURE_SAMPLES} a row): give --out FILE.npy to get them as an "
                        f"array (numpy.load)")
    run = load_run(args.run, args.device, args.weights)
    write_samples(run, out, args.class_, args.n, args.seed)
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-ssvae",
        description="Semi-supervised variational autoencoders in Pyro: train, compare, inspect.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train a model; writes config, metrics, "
                                "summary, checkpoint and figures to --out",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_settings_arguments(train)
    train.set_defaults(run_command=cmd_train)

    listing = commands.add_parser("list", help="every model and the inference methods it takes")
    listing.add_argument("--verbose", "-v", action="store_true",
                         help="also describe each inference method")
    listing.set_defaults(run_command=cmd_list)

    bench = commands.add_parser("bench", help="time one training step of every model x inference, "
                                "against plain PyTorch and as the number of classes grows")
    bench.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    bench.add_argument("--quick", action="store_true", help="a reduced set in seconds: each model's "
                       "default inference, K in 10 and 30, 2 repeats, no memory run")
    bench.add_argument("--repeats", type=int, help="timed steps per configuration (default 30)")
    bench.add_argument("--warmup", type=int, help="untimed steps first (default 5)")
    bench.add_argument("--threads", type=int, default=1, help="torch threads, also for the memory "
                       "run (default 1: on a small machine shared with other jobs, more threads "
                       "than free cores make timings vary several-fold)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--no-memory", action="store_true", help="skip the MNIST epoch run")
    bench.add_argument("--no-two-digit", action="store_true", help="skip the step on two-digit "
                       "MNIST (1,568 pixels, K = 100)")
    bench.add_argument("--data-dir", help="where MNIST is, for the two-digit "
                       "and memory runs")
    bench.add_argument("--out", help="a directory to write bench.json, bench.md and "
                       "scaling_in_k.png into (default: none, the tables are printed; the "
                       "README's numbers: --out experiments/results/bench)")
    bench.set_defaults(run_command=cmd_bench)

    predict = commands.add_parser("predict", help="classify every example of a file with a "
                                  "trained run; writes a CSV: index, label, p0 .. pK-1")
    predict.add_argument("--run", required=True, help="the --out directory of a training run")
    predict.add_argument("--input", required=True, help="a .npy array, a .npz file (array x), "
                         "or an IDX .gz file of 8-bit images, shaped as the run's data")
    predict.add_argument("--out", required=True, help="the CSV file to write")
    predict.add_argument("--device", default="cpu", help="cpu or cuda")
    predict.add_argument("--weights", choices=("best", "last"), default="best",
                        help="the best-validation weights (best.pt, those summary.json's "
                        "test_accuracy describes) or the last ones (checkpoint.pt)")
    predict.set_defaults(run_command=cmd_predict)

    evaluation = commands.add_parser(
        "evaluate", help="accuracy, per-class accuracy, confusion matrix, ELBO and "
        "importance-sampled log p(x), latent picture; written into the run directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    evaluation.add_argument("--run", required=True, help="the --out directory of a training run")
    evaluation.add_argument("--split", default="test", help="train, valid or test")
    evaluation.add_argument("--samples", type=int, default=100,
                            help="importance samples per image for log p(x) (Burda et al. use "
                            "5000)")
    evaluation.add_argument("--max-images", type=int, default=None,
                            help="evaluate the first N images of the split only")
    evaluation.add_argument("--data-dir", default=None, help="where the run's data set is, if "
                            "not where it was found in training")
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the binarisation and "
                            "of the importance samples")
    evaluation.add_argument("--device", default="cpu", help="cpu or cuda")
    evaluation.add_argument("--weights", choices=("best", "last"), default="best",
                        help="the best-validation weights (best.pt, those summary.json's "
                        "test_accuracy describes) or the last ones (checkpoint.pt)")
    evaluation.set_defaults(run_command=cmd_evaluate)

    sampling = commands.add_parser("sample", help="draw class-conditional samples of p(x | y, z) "
                                   "from a trained run into a PNG",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sampling.add_argument("--run", required=True, help="the --out directory of a training run")
    sampling.add_argument("--class", dest="class_", type=int, default=None,
                          help="the class y to sample (default: one row per class)")
    sampling.add_argument("--n", type=int, default=8, help="samples (per class)")
    sampling.add_argument("--seed", type=int, default=0, help="seed of the draws of z")
    sampling.add_argument("--out", required=True, help="the file to write: a figure (.png, "
                          ".svg, .pdf; --n up to 100), or .npy for the images as an array, "
                          "(n, *shape) for one --class, (K, n, *shape) for every class")
    sampling.add_argument("--device", default="cpu", help="cpu or cuda")
    sampling.add_argument("--weights", choices=("best", "last"), default="best",
                        help="the best-validation weights (best.pt, those summary.json's "
                        "test_accuracy describes) or the last ones (checkpoint.pt)")
    sampling.set_defaults(run_command=cmd_sample)

    drawing = commands.add_parser("render", help="draw a model's plate diagram (and its "
                                  "guide's) with Graphviz")
    drawing.add_argument("--model", default="m2",
                         help="model to draw, or `all` for one picture per model in the "
                         "directory --out (default: m2)")
    drawing.add_argument("--inference", default=None,
                         help="inference method, which sets y's family (default: the model's first)")
    drawing.add_argument("--guide", action="store_true", help="draw the guide beside the model")
    drawing.add_argument("--out", required=True, help="FILE.png or FILE.svg (a directory "
                         "with --model all)")
    drawing.add_argument("--format", default="png", help="png or svg, with --model all")
    drawing.set_defaults(run_command=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ppl_ssvae.checkpoint import CheckpointError
    from ppl_ssvae.distributed import DistributedError, is_main
    from ppl_ssvae.io import OutputError
    from ppl_ssvae.registry import UnsupportedError
    from ppl_ssvae.run import InputError, RunError
    from ppl_ssvae.train import NumericalFault, TrainingError

    args = build_parser().parse_args(argv)
    _replace_unencodable(sys.stdout)

    def say(message: str) -> None:  # under torchrun every rank has the same to say
        if is_main():
            print(message, file=sys.stderr)

    try:
        status = args.run_command(args)
        sys.stdout.flush()  # now, so that a closed pipe is seen here and not at exit
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except NumericalFault as e:
        say(f"ppl-ssvae: error: {e}")
        return EXIT_NUMERICAL_FAULT
    except (UserError, SettingsError, DataError, UnsupportedError, TrainingError,
            CheckpointError, OutputError, DistributedError, InputError, RunError) as e:
        say(f"ppl-ssvae: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        resume = "; rerun with --resume to continue from the last checkpoint"
        say(f"ppl-ssvae: interrupted{resume if args.command == 'train' else ''}")
        return EXIT_INTERRUPTED


def _replace_unencodable(stream) -> None:
    """A path the terminal's encoding cannot show (PYTHONIOENCODING=ascii and --out
    café) is printed with backslash escapes rather than failing the command."""
    try:
        stream.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError, OSError):  # not a TextIOWrapper, or detached
        pass


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the closed pipe goes
    nowhere, instead of failing again when Python flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
