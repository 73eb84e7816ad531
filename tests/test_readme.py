"""The README's "Your own data" walk-through runs as written: its Python blocks and its
commands, in order, in an empty directory, with tiny budgets (fewer epochs and
importance samples) swapped in so that it takes seconds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from ppl_ssvae.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your own data"
TINY = [(r"--epochs \d+", "--epochs 1 --max-steps 15"), (r"epochs=\d+", "epochs=1"),
        (r"--samples \d+", "--samples 2"), (r"samples=\d+", "samples=2")]


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the section, in order."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else None]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def shrink(code: str) -> str:
    for pattern, replacement in TINY:
        code = re.sub(pattern, replacement, code)
    return code


def test_the_walk_through_runs_as_written(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    found = blocks()
    assert [lang for lang, _ in found].count("python") >= 2 and any(
        "ppl-ssvae predict" in code for _, code in found)
    namespace: dict = {}
    for lang, code in found:
        code = shrink(code)
        if lang == "python":
            exec(compile(code, str(README), "exec"), namespace)
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
