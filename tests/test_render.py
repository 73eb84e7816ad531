"""`ppl-ssvae render`: every registered model is drawn, with y observed in the
labelled plate and latent in the unlabelled one, and the edges its docstring states."""

from __future__ import annotations

import os
import shutil

import pyro
import pytest

from conftest import data_shape, small_pair
from ppl_ssvae import MODELS, render
from ppl_ssvae.cli import main
from ppl_ssvae.labels import label_sites

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None and not os.environ.get("CI"),
    reason="Graphviz's dot is not installed (CI installs it: apt-get install graphviz)")


def specs(model: str, inference: str | None = None):
    pair, _ = small_pair(model=model, inference=inference or MODELS[model].inferences[0])
    batch = render.example_batch(*data_shape(model))
    return (render.graph_specification(pair.model, batch),
            render.graph_specification(pair.guide, batch, data_nodes=True))


def observed(spec) -> set[str]:
    return {name for name, data in spec["node_data"].items() if data["is_observed"]}


# the supervised baselines (mlp, two-digit-mlp) have no generative model of unlabelled
# images: no unlabelled plate, no latent label
SEMI_SUPERVISED = [name for name, spec in MODELS.items() if spec.classifier_term]


@pytest.mark.parametrize("model", SEMI_SUPERVISED)
def test_the_label_is_observed_in_the_labelled_plate_only(model):
    """Every label site the model declares (y; y1 and y2 for two-digit)."""
    model_spec, guide_spec = specs(model)
    sites = label_sites(small_pair(model=model)[0].model)
    for site in sites:
        assert f"labelled/{site}" in observed(model_spec)
        assert f"unlabelled/{site}" not in observed(model_spec)
        assert f"labelled/{site}" in model_spec["plate_groups"]["labelled"]
    # the guide samples no labelled label: the class given is data there
    assert guide_spec["node_data"]["labelled/y"]["distribution"] == render.DATA
    guide_latent = set(guide_spec["node_data"]) - observed(guide_spec)
    assert not any(name == f"labelled/{site}" for name in guide_latent for site in sites)


def test_m2_edges_are_its_generative_story_and_its_guide():
    model_spec, guide_spec = specs("m2")
    part = {(s, t) for s, t in model_spec["edge_list"] if s.startswith("unlabelled/")}
    assert part == {("unlabelled/y", "unlabelled/x"), ("unlabelled/z", "unlabelled/x")}
    part = {(s, t) for s, t in guide_spec["edge_list"] if s.startswith("unlabelled/")}
    assert part == {("unlabelled/x", "unlabelled/y"), ("unlabelled/x", "unlabelled/z"),
                    ("unlabelled/y", "unlabelled/z")}


def test_adgm_edges_add_the_auxiliary_node():
    model_spec, guide_spec = specs("adgm")
    m2_model, m2_guide = specs("m2")
    added = set(model_spec["edge_list"]) - set(m2_model["edge_list"])
    assert {t for _, t in added} == {"unlabelled/a", "labelled/a"}
    assert {s for s, t in added if t == "unlabelled/a"} == {"unlabelled/x", "unlabelled/y",
                                                            "unlabelled/z"}
    into = lambda site: {s for s, t in guide_spec["edge_list"] if t == site}
    assert into("unlabelled/a") == {"unlabelled/x"}
    assert into("unlabelled/y") == {"unlabelled/x", "unlabelled/a"}
    assert into("unlabelled/z") == {"unlabelled/x", "unlabelled/a", "unlabelled/y"}
    assert into("labelled/z") == {"labelled/x", "labelled/a", "labelled/y"}


@pytest.mark.parametrize("model", list(MODELS))
def test_pyro_render_model_takes_every_model_as_it_is(model):
    """Model and guide are plain Pyro callables: pyro.render_model draws them unaided."""
    pair, _ = small_pair(model=model, inference=MODELS[model].inferences[0])
    graph = pyro.render_model(pair.model, model_args=(render.example_batch(*data_shape(model)),))
    assert all(f'"labelled/{site}"' in graph.source for site in label_sites(pair.model))
    assert "fillcolor=gray" in graph.source


@needs_dot
@pytest.mark.parametrize("model", SEMI_SUPERVISED)
def test_render_writes_a_picture_for_every_model(model, tmp_path, capsys):
    out = tmp_path / f"{model}.svg"
    assert main(["render", "--model", model, "--guide", "--out", str(out)]) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "model p" in svg and "guide q" in svg
    for text in ("unlabelled: 50,000 images", "labelled: 100 images"):
        assert text in svg


@needs_dot
def test_render_png_and_every_model_at_once(tmp_path):
    assert main(["render", "--model", "all", "--out", str(tmp_path), "--format", "png"]) == 0
    for model in MODELS:
        assert (tmp_path / f"model-{model}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dot_is_one_line_that_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert main(["render", "--model", "m2", "--out", str(tmp_path / "m2.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install graphviz" in err


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope", "--out", "x.png"], "unknown model"),
    (["--model", "m2", "--inference", "nope", "--out", "x.png"], "does not take"),
    (["--model", "m2", "--out", "x.pdf"], ".png or .svg"),
])
def test_bad_render_arguments_exit_2(argv, message, capsys):
    assert main(["render", *argv]) == 2
    assert message in capsys.readouterr().err


def test_enumerated_y_is_marked_in_the_guide_and_relaxed_y_is_not():
    _, guide_spec = specs("m2", "enum")
    assert guide_spec["node_data"]["unlabelled/y"]["enumerated"] == "parallel"
    _, guide_spec = specs("m2", "gumbel")
    assert "enumerated" not in guide_spec["node_data"]["unlabelled/y"]
    assert guide_spec["node_data"]["unlabelled/y"]["distribution"] == "Concrete"  # ppl_ssvae.relaxed
