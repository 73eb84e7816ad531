"""The README and the documentation's pages say what the repository holds:

- the README's quickstart and the "Your own data" walk-through of docs/using.md run as
  written: their Python blocks and their commands, in order, in an empty directory, with
  tiny budgets (fewer epochs and importance samples) swapped in so that each takes seconds;
- every generated block of every page equals its results file, and the pages' blocks are
  the ones ``experiments/readme.py`` lists (``PAGES``); the README's headline table is the
  one computed from the results' summaries;
- the README's relative links name files that exist (the pages' links are checked by
  ``mkdocs build --strict``, which ``make test`` runs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from experiments import readme
from ppl_ssvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WALK_THROUGHS = [(README, "## Quickstart: your own data"), (ROOT / "docs" / "using.md", "## Your own data")]
TINY = [(r"--epochs \d+", "--epochs 1 --max-steps 15"), (r"epochs=\d+", "epochs=1"),
        (r"--samples \d+", "--samples 2"), (r"samples=\d+", "samples=2")]


def blocks(page: Path, heading: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the page's section, in order."""
    text = page.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start:end if end > 0 else None]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def shrink(code: str) -> str:
    for pattern, replacement in TINY:
        code = re.sub(pattern, replacement, code)
    return code


@pytest.mark.parametrize("page, heading", WALK_THROUGHS, ids=["README", "docs/using.md"])
def test_the_walk_through_runs_as_written(page, heading, tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    found = blocks(page, heading)
    assert [lang for lang, _ in found].count("python") >= 2 and any(
        "ppl-ssvae predict" in code for _, code in found)
    namespace: dict = {}
    for lang, code in found:
        code = shrink(code)
        if lang == "python":
            exec(compile(code, str(page), "exec"), namespace)
            continue
        for line in code.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("ppl-ssvae "):
                argv = shlex.split(line)[1:] + (["--no-progress"] if argv_is_train(line) else [])
                assert main(argv) == 0, (line, capsys.readouterr().err)
    # what the walk-through promises exists
    assert (tmp_path / "predictions.csv").read_text().startswith("index,label,p0")
    assert (tmp_path / "runs" / "digits" / "evaluation.json").exists()
    assert (tmp_path / "threes.png").stat().st_size > 0
    assert 0.0 <= namespace["clf"].score(namespace["x"][1500:], namespace["y"][1500:]) <= 1.0


def argv_is_train(line: str) -> bool:
    return line.split()[1] == "train"


@pytest.mark.parametrize("name", sorted(readme.PAGES))
def test_every_generated_block_equals_its_results_file(name):
    page = ROOT / name
    text = page.read_text()
    assert readme.registered(page, text) == list(readme.PAGES[name])  # the blocks PAGES lists
    filled, found = readme.fill(text, page.parent)
    assert found, f"{name} has no generated block"
    assert filled == text, (f"{name}: a generated block differs from its results file; "
                            "run `python -m experiments.readme`")


def test_the_readme_headline_table_is_computed_from_the_summaries():
    assert (ROOT / readme.HEADLINE).read_text() == readme.headline(ROOT), (
        "the results' summary.json files changed: run `python -m experiments.readme`")


def test_every_page_with_a_generated_block_is_listed():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    with_blocks = {p.relative_to(ROOT).as_posix() for p in pages if readme.sources(p.read_text())}
    assert with_blocks == set(readme.PAGES)


def test_a_page_whose_blocks_differ_from_its_entry_is_refused(monkeypatch, capsys):
    monkeypatch.setitem(readme.PAGES, "docs/results/time.md", ())
    assert readme.main([str(ROOT / "docs" / "results" / "time.md")]) == 2
    assert "lists nothing for it" in capsys.readouterr().err


def test_the_readme_links_resolve():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if "://" in target:
            continue
        assert (ROOT / target.split("#")[0]).exists(), f"README links to {target}, which is missing"
