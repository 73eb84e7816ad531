"""Plate diagrams of a model, and of its guide, drawn with Graphviz.

The dependencies come from Pyro's own model inspection, the first half of
``pyro.render_model``: the callable is traced once on a small example batch while
every sampled value carries the set of sites it was computed from
(``pyro.infer.inspect.get_model_relations``). The drawing is ours, so that

- a node is labelled with its site name inside its plate (``y`` in the plate
  ``unlabelled``, not ``unlabelled/y``), with its distribution underneath, and
  "summed out" where the guide marks it for enumeration;
  shaded nodes are observed, white ones latent: the same ``y`` is shaded in the
  labelled plate and white in the unlabelled one;
- model and guide can be drawn side by side;
- the guide's dependence on the data shows: before tracing the guide, the
  images (and the observed labels) are declared as observed sites, so the edges
  ``x -> y``, ``x -> z`` appear, which ``pyro.render_model(guide)`` alone leaves out.

Any registered model is drawn the same way: ``ppl-ssvae render --model M --out M.png``.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.inspect import generate_graph_specification, get_model_relations

from ppl_ssvae.batch import Batch
from ppl_ssvae.config import Settings
from ppl_ssvae.io import OutputError, prepare_output_dir
from ppl_ssvae.registry import MODELS, build, check

FORMATS = ("png", "svg")
INSTALL_DOT = ("Graphviz's `dot` program is not installed: install it with `apt-get install graphviz` "
               "(Debian/Ubuntu), `brew install graphviz` (macOS) or `conda install graphviz`")
INSTALL_PYTHON_GRAPHVIZ = "the graphviz Python package is missing: `pip install graphviz`"
OBSERVED, LATENT = "gray80", "white"
DATA = "data"  # the "distribution" of a guide's data node


class RenderError(ValueError):
    """Rendering cannot go on; the message says what to install or change."""


def require_graphviz():
    """The graphviz module, or a ``RenderError`` that says how to install what is missing."""
    try:
        import graphviz
    except ImportError:
        raise RenderError(INSTALL_PYTHON_GRAPHVIZ) from None
    if shutil.which("dot") is None:
        raise RenderError(INSTALL_DOT)
    return graphviz


def example_batch(num_classes: int = 10, x_dim: int = 784, size: int = 3,
                  n_u: int = 50_000, n_l: int = 100) -> Batch:
    """A few random binary images, unlabelled and labelled, standing for MNIST's sets."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2 * size, x_dim, generator=g) < 0.5).to(torch.get_default_dtype())
    y = torch.arange(size) % num_classes
    return Batch(x_u=x[:size], x_l=x[size:], y_l=y, n_u=n_u, n_l=n_l)


def _seeing_data(guide):
    """``guide`` run on a batch whose images and labels were first declared as
    observed sites (``unlabelled/x``, ``labelled/x``, ``labelled/y``), so that the
    provenance of every guide site includes the data it was computed from."""

    def declare(name: str, value: torch.Tensor, fn: dist.Distribution) -> torch.Tensor:
        return pyro.sample(name, fn.to_event(value.dim()), obs=value)

    def guide_seeing_data(batch: Batch) -> None:
        seen = {}
        for part in batch.parts():
            half = torch.full_like(part.x, 0.5)
            seen[part.name] = (declare(f"{part.name}/x", part.x, dist.Bernoulli(half)),
                               None if part.y is None else
                               declare(f"{part.name}/y", part.y,
                                       dist.Categorical(logits=torch.zeros(int(part.y.max()) + 1))
                                       .expand(part.y.shape)))
        x_u, _ = seen.get("unlabelled", (None, None))
        x_l, y_l = seen.get("labelled", (None, None))
        guide(Batch(x_u=x_u, x_l=x_l, y_l=y_l, n_u=batch.n_u, n_l=batch.n_l))

    return guide_seeing_data


def graph_specification(fn, batch: Batch, data_nodes: bool = False) -> dict:
    """Pyro's graph specification of ``fn(batch)`` (plates, nodes, edges); with
    ``data_nodes`` the batch's images and labels become observed ``data`` nodes."""
    traced = _seeing_data(fn) if data_nodes else fn
    relations = get_model_relations(traced, (batch,))
    spec = generate_graph_specification(relations)
    with torch.random.fork_rng():
        trace = pyro.poutine.trace(fn).get_trace(batch)
    for name, site in trace.nodes.items():  # say which sites the ELBO sums out exactly
        if site["type"] == "sample" and site["infer"].get("enumerate") and name in spec["node_data"]:
            spec["node_data"][name]["enumerated"] = site["infer"]["enumerate"]
    if data_nodes:
        # the declared data sites sit outside any plate: file each under its part
        loose = spec["plate_groups"].pop(None, [])
        for name in loose:
            plate = name.split("/")[0]
            if plate in spec["plate_groups"]:
                spec["plate_groups"][plate].insert(0, name)
                spec["node_data"][name]["distribution"] = DATA
            else:
                spec["plate_groups"].setdefault(None, []).append(name)
    return spec


def _node_label(site: str, data: dict) -> str:
    name = html.escape(site.rsplit("/", 1)[-1])
    detail = html.escape(data["distribution"] or "")
    if data.get("enumerated"):
        detail += f'<BR/><I>summed out ({html.escape(data["enumerated"])})</I>'
    return f'<<B>{name}</B><BR/><FONT POINT-SIZE="10">{detail}</FONT>>'


def _add_cluster(graph, spec: dict, prefix: str, title: str, plate_titles: dict) -> None:
    """Draw one specification as a cluster titled ``title``, node ids prefixed."""
    with graph.subgraph(name=f"cluster_{prefix}") as outer:
        outer.attr(label=title, labelloc="t", fontsize="16", style="rounded", color="gray60")
        for site in spec["plate_groups"].get(None, []):  # sites outside every plate
            _add_node(outer, spec, prefix, site)
        # Graphviz lays sibling clusters out right to left: reversed, they read in code order
        for plate, sites in reversed(spec["plate_groups"].items()):
            if plate is None:
                continue
            with outer.subgraph(name=f"cluster_{prefix}_{plate}") as box:
                box.attr(label=plate_titles.get(plate, plate), labeljust="r", labelloc="b",
                         style="solid", color="black", fontsize="12")
                for site in sites:
                    _add_node(box, spec, prefix, site)
        for source, target in spec["edge_list"]:
            outer.edge(f"{prefix}.{source}", f"{prefix}.{target}")


def _add_node(graph, spec: dict, prefix: str, site: str) -> None:
    data = spec["node_data"][site]
    graph.node(f"{prefix}.{site}", label=_node_label(site, data),
               shape="ellipse", style="filled",
               fillcolor=OBSERVED if data["is_observed"] else LATENT)


def draw(model_spec: dict, guide_spec: dict | None = None, title: str = "",
         plate_sizes: dict | None = None):
    """A ``graphviz.Digraph`` of the model (and the guide, to its right)."""
    graphviz = require_graphviz()
    graph = graphviz.Digraph()
    heading = (f'<<FONT POINT-SIZE="18">{html.escape(title)}</FONT><BR/>'
               f'<FONT POINT-SIZE="11">shaded: observed     white: latent</FONT>>')
    graph.attr(fontname="Helvetica", rankdir="TB", nodesep="0.35", ranksep="0.45",
               newrank="true", labelloc="t", label=heading)
    graph.attr("node", fontname="Helvetica", fontsize="14", margin="0.06,0.03")
    graph.attr("edge", arrowsize="0.7")
    sizes = plate_sizes or {}
    plate_titles = {plate: f"{plate}: {size:,} images" for plate, size in sizes.items()}
    _add_cluster(graph, model_spec, "p", "model p", plate_titles)
    if guide_spec is not None:
        _add_cluster(graph, guide_spec, "q", "guide q", plate_titles)
    return graph


def render(model: str, inference: str | None = None, guide: bool = False,
           out: str | Path | None = None):
    """Draw ``model`` (with ``--inference``, default its first) and, if ``guide``, its
    guide; write the picture to ``out`` (.png or .svg) when given. Returns the
    ``graphviz.Digraph``."""
    inference = inference or (MODELS[model].inferences[0] if model in MODELS else "")
    check(model, inference)
    if out is not None and Path(out).suffix.lstrip(".") not in FORMATS:
        raise RenderError(f"--out must end in .png or .svg, got {str(out)!r}")
    if out is not None:  # before the drawing: a target that cannot be written is refused now
        _check_target(Path(out))
    require_graphviz()
    # the drawing depends on which sites feed which, not on network sizes: keep them small
    settings = Settings(model=model, inference=inference, hidden=(16,), z_dim=4,
                        activation="softplus", batch_norm=False, input_dropout=0.0)
    k, x_dim = MODELS[model].example_data  # a data set the model builds on
    pair = build(settings, k, x_dim)
    batch = example_batch(k, x_dim)
    with torch.no_grad():
        model_spec = graph_specification(pair.model, batch)
        guide_spec = graph_specification(pair.guide, batch, data_nodes=True) if guide else None
    graph = draw(model_spec, guide_spec, title=f"{model}  (--inference {inference})",
                 plate_sizes={"unlabelled": batch.n_u, "labelled": batch.n_l})
    if out is not None:
        out = Path(out)
        if out.suffix == ".png":
            graph.attr(dpi="110")
        graph.render(outfile=str(out), cleanup=True)
    return graph


def _check_target(path: Path) -> None:
    """``path`` can be written: its directory exists (made if need be) and takes new files,
    and it is not itself a directory; ``OutputError`` if not."""
    prepare_output_dir(path.parent, f"--out {path}: its directory {path.parent}")
    if path.is_dir():
        raise OutputError(f"--out {path} is a directory: name the picture's file, e.g. "
                          f"{path / 'model.png'}")


def render_all(directory: str | Path, fmt: str = "png", guide: bool = True) -> list[Path]:
    """One picture per registered model, ``directory/model-MODEL.fmt``, each with its
    default inference method."""
    if fmt not in FORMATS:
        raise RenderError(f"--format takes png or svg, got {fmt!r}")
    prepare_output_dir(directory)
    paths = []
    for name in MODELS:
        path = Path(directory) / f"model-{name}.{fmt}"
        render(name, guide=guide, out=path)
        paths.append(path)
    return paths
