"""Files written whole or not at all: a temporary file beside the target, fsync,
then an atomic rename. A run killed at any moment leaves either the old file or
the new one, never a truncated one; at worst a stray ``.NAME.*.tmp`` file, which
the next run in the same directory removes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
# what mkstemp(prefix=".NAME.", suffix=".tmp") names its files: 8 random characters
STRAY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class OutputError(Exception):
    """An output directory that cannot be used; the message says what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp gives 0600


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def save_figure(figure, path: str | os.PathLike, **kwargs) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=fmt, **kwargs))


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory this process can write to, created if need be, with the
    temporary files of an earlier, killed run removed; ``OutputError`` if it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a directory: choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--out {path} cannot be created ({e.strerror or e}): choose a "
                          f"writable directory") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"--out {path} is not writable ({e.strerror or e}): choose a writable "
                          f"directory or fix its permissions") from None
    for stray in path.glob(f".*{TEMP_SUFFIX}"):  # left by a process killed mid-write
        if not STRAY_TEMP.match(stray.name) or not stray.is_file():
            continue
        try:
            stray.unlink()
        except OSError:
            pass
    return path
