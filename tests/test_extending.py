"""docs/extending.md's walkthrough of the two-digit model runs as written: its Python
blocks, executed in order in one namespace, build the model and guide, register them,
refuse a data set of 10 classes, and hold the ELBO to the hand sum over the 100 pairs;
and the walkthrough's model is the library's (same parameters, same ELBO)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from ppl_ssvae import build
from ppl_ssvae.registry import MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
SECTION = "## 6. A label with parts: the two-digit model"


def two_digit_blocks() -> list[str]:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def namespace(monkeypatch):
    monkeypatch.setattr("ppl_ssvae.registry.MODELS", dict(MODELS))  # the snippet registers
    import ppl_ssvae.registry as registry

    names: dict = {"__name__": "extending_md"}
    blocks = two_digit_blocks()
    assert len(blocks) >= 4
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), names)  # noqa: S102
    names["printed"] = printed.getvalue()
    assert "my-two-digit" in registry.MODELS and "my-two-digit" not in MODELS
    return names


def test_the_two_digit_walkthrough_runs_as_written(namespace):
    assert "--dataset two-digit-mnist" in namespace["printed"]  # the refusal it prints
    assert namespace["by_pyro"] == pytest.approx(namespace["by_hand"], rel=1e-5)


def test_the_walkthroughs_model_is_the_librarys(namespace):
    """Same networks, same parameter names, and the same ELBO on the same draws."""
    doc_pair = namespace["pair"]
    library = build(namespace["small"].replace(model="two-digit"), 100, 1568)
    assert [n for n, _ in doc_pair.named_parameters()] == \
        [n for n, _ in library.named_parameters()]
    library.load_state_dict(doc_pair.state_dict())
    batch = namespace["batch"]
    losses = []
    for pair in (doc_pair, library):
        pyro.set_rng_seed(3)
        with torch.no_grad():
            losses.append(TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
