"""docs/extending.md's "Adding an inference method" runs as written: its worked
example registers an estimator that builds, trains and is listed."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from ppl_ssvae import inference, registry

PAGE = Path(__file__).parent.parent / "docs" / "extending.md"


def section_code(title: str) -> list[str]:
    text = PAGE.read_text()
    start = text.index(f"# {title}")
    return re.findall(r"```python\n(.*?)```", text[start:], flags=re.S)


@pytest.fixture
def registries(monkeypatch):
    """The registries as they were, whatever the snippets add to them."""
    monkeypatch.setattr(inference, "INFERENCES", dict(inference.INFERENCES))
    monkeypatch.setattr(registry, "INFERENCES", inference.INFERENCES)
    monkeypatch.setattr(registry, "MODELS", {k: copy.copy(v) for k, v in registry.MODELS.items()})


def test_adding_an_inference_method_runs_as_written(registries, tiny, capsys):
    namespace: dict = {}
    for block in section_code("Adding an inference method"):
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out.strip() == "4"
    assert "my-rloo" in registry.MODELS["m2"].inferences
    assert "my-rloo" in registry.MODELS["adgm"].inferences
    assert "my-rloo" not in registry.MODELS["dirichlet"].inferences
    assert namespace["loss"] > 0
    # the registered method trains through the library's step, as --inference my-rloo would
    from conftest import make_batch, small_pair
    pair, _ = small_pair(inference="my-rloo", samples=3)
    terms = pair.loss_and_grads(make_batch(tiny))
    assert pair.elbo.samples == 3 and terms["loss"] > 0


def test_registering_a_method_twice_or_for_an_unknown_model_is_refused(registries):
    entry = inference.INFERENCES["rloo"]
    with pytest.raises(registry.UnsupportedError, match="exists already"):
        registry.register_inference(entry)
    with pytest.raises(registry.UnsupportedError, match="unknown models"):
        registry.register_inference(inference.Inference("x", "", "exact", models=("m9",)))
