"""Copy generated tables into the README and the documentation's pages, so that their
numbers are the results files' numbers.

A generated block in a page names its source file, by its path relative to the page
(so that the link also works on GitHub)::

    <!-- generated from ../../experiments/results/k100/results.md -->
    (replaced by the file's text)
    <!-- end generated -->

``PAGES`` lists every page that holds such blocks, with the sources of its blocks in
order (paths relative to the repository root). ::

    python -m experiments.readme              # every page in PAGES, and the headline table
    python -m experiments.readme PAGE ...     # these pages only

first writes ``experiments/results/headline.md``, the README's summary of the headline
results, from the results' ``summary.json`` files (``headline``), then rewrites every
block of every page from its file and says which blocks it filled. A new results table
is one new block in its page and its source added to the page's entry here;
``tests/test_readme.py`` holds every page's blocks to ``PAGES`` and to their files. The
aggregates (``experiments.compare``, ``experiments.timebudget``, ...) write the files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ppl_ssvae.io import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "experiments/results"
HEADLINE = f"{RESULTS}/headline.md"

# page (relative to the repository root) -> the sources of its generated blocks, in order
PAGES: dict[str, tuple[str, ...]] = {
    "README.md": (HEADLINE,),
    "docs/model.md": (f"{RESULTS}/posterior/m2-enum-300-steps.md",),
    "docs/performance.md": (f"{RESULTS}/bench/bench.md",),
    "docs/results/epochs.md": (f"{RESULTS}/long/results.md", f"{RESULTS}/results.md"),
    "docs/results/reproduction.md": (f"{RESULTS}/reproduction/results.md",
                                     f"{RESULTS}/adgm/results.md"),
    "docs/results/time.md": (f"{RESULTS}/k100/results.md",),
    "docs/results/estimators.md": (f"{RESULTS}/estimators/results.md",),
    "docs/results/own-data.md": (f"{RESULTS}/digits/results.md",),
    "docs/results/fashion-mnist.md": (f"{RESULTS}/fashion/results.md",),
}

BLOCK = re.compile(r"(<!-- generated from (?P<source>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.DOTALL)


class ReadmeError(Exception):
    pass


def sources(text: str) -> list[str]:
    """The sources named by the generated blocks of ``text``, in order, as written."""
    return [match["source"] for match in BLOCK.finditer(text)]


def fill(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block replaced by its source file (paths relative to
    ``root``, the page's directory); and the sources."""
    found = []

    def replace(match: re.Match) -> str:
        source = root / match["source"]
        if not source.is_file():
            raise ReadmeError(f"{match['source']} does not exist: run the comparison "
                              "(python -m experiments.compare ...) first")
        found.append(match["source"])
        return match.group(1) + source.read_text().rstrip("\n") + "\n" + match.group(4)

    return BLOCK.sub(replace, text), found


def registered(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """The sources of ``page``'s blocks relative to the repository root, checked against
    its entry in ``PAGES`` when it has one."""
    try:
        name = page.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # a page outside the repository (a test's): nothing to check it against
        return sources(text)
    found = [(page.parent / s).resolve().relative_to(root.resolve()).as_posix()
             for s in sources(text)]
    expected = list(PAGES.get(name, ()))
    if found != expected:
        raise ReadmeError(f"{name} has generated blocks from {found or 'nothing'}, but "
                          f"experiments/readme.py's PAGES lists {expected or 'nothing'} for it: "
                          "add the block to the page, or the source to its entry")
    return found


# --- the README's headline table --------------------------------------------------------

# The reproduction's rows shown, one per row of the original's table (ApproxM2 twice: the
# score function as the original ran it, and with a baseline).
ORIGINAL_ROWS = ("m2/enum", "m2-gumbel-cat-kl-s3", "m2-logistic-normal-cat-kl-s3",
                 "m2-logistic-normal-cat-kl-s1", "m2-st-gumbel-cat-kl-s1",
                 "logistic-normal-prior-s3-onehot-lw500", "dirichlet/reparam", "m2/score",
                 "m2/tracegraph", "mlp/ml")
EXACT = "m2/enum"
# rows shown once every seed of the comparison has used its budget
# a row appears once every planned seed of it has used its budget
BUDGET_ROWS = (("two-digit-mnist", ("m2/enum", "m2/gumbel-cat-kl", "mlp/ml", "m2/sum-and-sample",
                                    "m2/rloo", "m2/unordered-set", "m2/gumbel-rao",
                                    "two-digit/gumbel-cat-kl", "two-digit-gumbel-cat-kl-cw01",
                                    "two-digit-mlp/ml", "hierarchical/enum",
                                    "hierarchical-enum-cw01")),
               ("mnist", ("m2/enum", "m2/gumbel-cat-kl", "m2/sum-and-sample", "m2/rloo",
                          "m2/unordered-set", "m2/gumbel-rao", "hierarchical/enum")))
DIGITS_ROWS = ("M2 (exact sum)", "MLP (labelled only)", "LabelSpreading")
FASHION_ROWS = ("m2/enum", "mlp/ml")
# the pages the table links to, relative to the README
PAGE_OF = {"reproduction": "docs/results/reproduction.md", "k100": "docs/results/time.md",
           "digits": "docs/results/own-data.md", "fashion": "docs/results/fashion-mnist.md"}


def _summary(root: Path, name: str) -> dict:
    path = root / RESULTS / name / "summary.json"
    if not path.is_file():
        raise ReadmeError(f"{path.relative_to(root)} does not exist: run its experiment first")
    return json.loads(path.read_text())


def headline(root: Path = ROOT) -> str:
    """The README's table of headline results, computed from the ``summary.json`` files of
    the reproduction, the equal-time runs at K = 10 and 100, the digits and Fashion-MNIST;
    each group of rows links to its page (paths relative to the repository root)."""
    lines = ["| result | method | accuracy % | against | details |", "|---|---|---:|---|---|"]

    def group(title: str, link: str, rows: list[tuple[str, str, str]]) -> None:
        for i, (method, value, versus) in enumerate(rows):
            lines.append(f"| {title if i == 0 else ''} | {method} | {value} | {versus} | "
                         f"{link if i == 0 else ''} |")

    reproduction = _summary(root, "reproduction")
    seeds = max(len(reproduction[key]["seeds"]) for key in ORIGINAL_ROWS)
    epochs = max(max(reproduction[key].get("epochs_per_seed") or [reproduction[key]["epochs"]])
                 for key in ORIGINAL_ROWS)
    group(f"MNIST, 100 labels: best validation accuracy, {seeds} seeds, at most {epochs} "
          "epochs, against the original's row (10 seeds, 300 epochs)",
          f"[Reproducing the original]({PAGE_OF['reproduction']})",
          [(f"`{key}`", f"{100 * reproduction[key]['best_valid_accuracy_mean']:.2f}",
            f"{reproduction[key]['original']['row']}: "
            f"{100 * reproduction[key]['original']['valid_accuracy']:.1f}")
           for key in ORIGINAL_ROWS])
    budget = _summary(root, "k100")
    for dataset, keys in BUDGET_ROWS:
        panel = budget["panels"][dataset]
        exact = panel["methods"][EXACT]
        rows = []
        for key in keys:
            m = panel["methods"].get(key)
            if m is None or not m["complete"] or len(m["seeds"]) < len(budget["seeds"]):
                continue
            step = f"step {1000 * m['step_seconds']:,.1f} ms"
            rows.append((f"`{key}`", f"{100 * m['final_accuracy']:.1f}", step if key == EXACT else
                         f"`{EXACT}`: {100 * exact['final_accuracy']:.1f}; {step}"))
        group(f"{dataset}, K = {panel['classes']}, {panel['labels']:,} labels: validation "
              f"accuracy after {budget['budget'] / 60:,.0f} CPU minutes of training",
              f"[Accuracy against time]({PAGE_OF['k100']})", rows)
    digits = _summary(root, "digits")
    first = DIGITS_ROWS[0]
    group(f"Your own data: scikit-learn's digits, 5 labels a class, test accuracy, "
          f"{len(digits[first]['test_accuracy'])} seeds",
          f"[Your own data]({PAGE_OF['digits']})",
          [(name, f"{100 * digits[name]['mean']:.2f}",
            "" if name == first else f"{first}: {100 * digits[first]['mean']:.2f}")
           for name in DIGITS_ROWS])
    fashion = _summary(root, "fashion")
    first = FASHION_ROWS[0]
    group(f"Fashion-MNIST, 100 labels: test accuracy, {len(fashion[first]['seeds'])} seeds, "
          f"{fashion[first]['epochs']} epochs", f"[Fashion-MNIST]({PAGE_OF['fashion']})",
          [(f"`{key}`", f"{100 * fashion[key]['test_accuracy_mean']:.2f}",
            "" if key == first else f"`{first}`: {100 * fashion[first]['test_accuracy_mean']:.2f}")
           for key in FASHION_ROWS])
    lines += ["", "Computed by `python -m experiments.readme` from the `summary.json` files of "
              "`experiments/results/` reproduction, k100, digits and fashion."]
    return "\n".join(lines) + "\n"


def filled_page(page: Path, root: Path = ROOT) -> tuple[str, list[str]]:
    """``page``'s text with its generated blocks rewritten from their files; the sources."""
    if not page.is_file():
        raise ReadmeError(f"{page} does not exist: pass the page's path")
    text = page.read_text()
    registered(page, text, root)
    return fill(text, page.parent)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        pages = [Path(a) for a in argv] or [ROOT / name for name in PAGES]
        table = None if argv else headline(ROOT)
        if table is not None:
            write_text(ROOT / HEADLINE, table)
        # every page is checked and filled before any is written: an error leaves them all
        filled = [(page, *filled_page(page)) for page in pages]
    except ReadmeError as e:
        print(f"readme: error: {e}", file=sys.stderr)
        return 2
    for page, text, found in filled:
        write_text(page, text)
        print(f"{page}: filled {len(found)} block(s) from {', '.join(found) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
