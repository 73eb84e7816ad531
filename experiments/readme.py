"""Copy generated tables into the README, so that its numbers are the files' numbers.

A generated block in the README names its source file::

    <!-- generated from experiments/results/results.md -->
    (replaced by the file's text)
    <!-- end generated -->

    python -m experiments.readme [README.md]

rewrites every such block from its file (paths relative to the README) and says
which blocks it filled. The aggregate (``experiments.compare``) writes the files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ppl_ssvae.io import write_text

BLOCK = re.compile(r"(<!-- generated from (?P<source>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.DOTALL)


class ReadmeError(Exception):
    pass


def fill(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block replaced by its source file; and the sources."""
    sources = []

    def replace(match: re.Match) -> str:
        source = root / match["source"]
        if not source.is_file():
            raise ReadmeError(f"{match['source']} does not exist: run the comparison "
                              "(python -m experiments.compare ...) first")
        sources.append(match["source"])
        return match.group(1) + source.read_text().rstrip("\n") + "\n" + match.group(4)

    return BLOCK.sub(replace, text), sources


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = Path(argv[0] if argv else "README.md")
    try:
        if not readme.is_file():
            raise ReadmeError(f"{readme} does not exist: pass the README's path")
        text, sources = fill(readme.read_text(), readme.parent)
    except ReadmeError as e:
        print(f"readme: error: {e}", file=sys.stderr)
        return 2
    write_text(readme, text)
    print(f"{readme}: filled {len(sources)} block(s) from {', '.join(sources) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
