"""MkDocs hook: the site shows the figures and notebooks where the repository keeps them.

Result figures live beside their results (``experiments/results/**``) and the tutorials in
``tutorials/``, but MkDocs serves only what is under ``docs/``. Instead of a second copy in
``docs/``, this hook adds those files to the site at their repository paths
(``site/experiments/results/...``, ``site/tutorials/...``; the notebooks become pages through
mkdocs-jupyter), and a page links to them by their path relative to the page's own source
file, as GitHub reads it: ``docs/results/time.md`` shows
``../../experiments/results/k100/figures/accuracy_vs_time.png``. The hook rewrites such a
link to the site's copy; a link to a file that is not served is left as written, so that
``mkdocs build --strict`` fails on it.

It also writes the table of every setting into the API reference, where the page has
``<!-- the fields of Settings -->``: each field of ``ppl_ssvae.Settings`` with its option,
type, default and help, read from the dataclass itself, so the page and
``ppl-ssvae train --help`` say the same.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# What the site serves from outside docs/: (folder, glob), relative to the repository root.
SERVED = [("experiments/results", "**/*.png"), ("tutorials", "*.ipynb")]

SETTINGS_TABLE = "<!-- the fields of Settings -->"

# the target of a Markdown link or image: ](target) or ](target "title")
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


@event_priority(100)  # before mkdocs-jupyter, which makes the notebooks pages
def on_files(files, config):
    root = _root(config)
    for folder, pattern in SERVED:
        for path in sorted((root / folder).glob(pattern)):
            files.append(File(path.relative_to(root).as_posix(), src_dir=str(root),
                              dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files


def settings_table(root: Path) -> str:
    """Every field of ``Settings``: its option, type, default and help. ``config.py`` is
    loaded on its own, without importing the package (and torch), to keep the build fast."""
    spec = importlib.util.spec_from_file_location("_ppl_ssvae_config", root / "ppl_ssvae" / "config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the module up while building the class
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    rows = ["| option | field: type | default | what it sets |", "|---|---|---|---|"]
    for f in dataclasses.fields(module.Settings):
        text = f.metadata.get("help", "").replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{f.name}: {f.type}` | "
                    f"`{f.default!r}` | {text} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown, page, config, files):
    root, docs = _root(config), Path(config.docs_dir).resolve()
    if SETTINGS_TABLE in markdown:
        markdown = markdown.replace(SETTINGS_TABLE, settings_table(root))
    if page.file.abs_src_path is None:
        return markdown
    here = Path(page.file.abs_src_path).resolve().parent

    def rewrite(match: re.Match) -> str:
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        path = (here / target).resolve()
        if docs in path.parents or root not in path.parents:
            return match[0]  # a page of the site, or outside the repository: as written
        uri = path.relative_to(root).as_posix()
        if files.get_file_from_path(uri) is None:
            return match[0]  # not served: the strict build reports the link
        new = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
        return match[1] + new + (match[3] or "") + match[4]

    return LINK.sub(rewrite, markdown)
