"""Files written whole or not at all: a temporary file beside the target, fsync,
then an atomic rename. A run killed at any moment leaves either the old file or
the new one, never a truncated one; at worst a stray ``.NAME.*.tmp`` file, which
the next run in the same directory removes. A write that fails (a full disk, a
directory where the file should be) raises ``WriteError`` naming the file and the
cause, and leaves the old file as it was.

One run per output directory: ``run_directory`` holds an OS lock on it
(``flock``, released by the kernel however the process ends) for as long as the
run lasts, and refuses a second run there in one line that names the holder.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
# what mkstemp(prefix=".NAME.", suffix=".tmp") names its files: 8 random characters
STRAY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
LOCK_NAME = ".ppl-ssvae.lock"  # held by the run writing into the directory; says who that is
# what a training run leaves in its directory: another run's, when a new run starts there
RUN_OUTPUTS = ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt")


class OutputError(Exception):
    """An output directory that cannot be used; the message says what to do."""


class WriteError(OutputError):
    """A file that could not be written (full disk, no permission, a directory in the
    way); the old file, if there was one, is left as it was."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp gives 0600


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``."""
    path = Path(path)
    try:  # a read-only file system, or a directory (/proc) that takes no new files
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as e:
        raise WriteError(f"cannot write {path} ({e.strerror or e}): choose a writable "
                         f"directory; any earlier {path.name} is left as it was") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _write_failure(e)
        if cause is None:
            raise
        raise WriteError(f"cannot write {path} ({cause}): make room, or move what is in the "
                         f"way; any earlier {path.name} is left as it was") from None
    _fsync_dir(path.parent)


def _write_failure(error: BaseException) -> str | None:
    """Why a write failed, if ``error`` is a failure to write (and not, say, a bug in the
    code producing the bytes): torch's writer wraps the OSError of the file object in a
    RuntimeError ("[enforce fail at inline_container.cc...] unexpected pos")."""
    if isinstance(error, RuntimeError) and isinstance(error.__context__, OSError):
        error = error.__context__
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return None


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


def write_all(files: dict[Path, Callable[[IO[bytes]], Any]]) -> None:
    """Write several files as one: each to a temporary file first, and only when every
    one is complete are they renamed into place. A failure before that leaves every old
    file as it was (``WriteError``); none is half written."""
    written: list[tuple[str, Path]] = []
    try:
        for path, write in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=TEMP_SUFFIX)
            written.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fchmod(f.fileno(), _FILE_MODE)
                os.fsync(f.fileno())
    except BaseException as e:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.unlink(tmp)
        cause = _write_failure(e)
        if cause is None:
            raise
        path = written[-1][1] if written else Path(next(iter(files)))
        raise WriteError(f"cannot write {path} ({cause}): make room, or move what is in the "
                         f"way; no file was changed") from None
    for tmp, path in written:
        os.replace(tmp, path)
    if written:
        _fsync_dir(written[0][1].parent)


def figure_writer(figure, fmt: str = "png", **kwargs) -> Callable[[IO[bytes]], Any]:
    """What ``write_all`` calls to write ``figure``."""
    return lambda f: figure.savefig(f, format=fmt, **kwargs)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def save_figure(figure, path: str | os.PathLike, **kwargs) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=fmt, **kwargs))


def prepare_output_dir(path: str | os.PathLike, subject: str | None = None,
                       advice: str | None = None) -> Path:
    """``path`` as a directory this process can write to, created if need be;
    ``OutputError`` if it cannot be, whose message begins with ``subject`` (default
    "--out PATH") and ends with ``advice`` (default: choose another --out)."""
    path = Path(path)
    subject = subject or f"--out {path}"
    if path.exists() and not path.is_dir():
        raise OutputError(f"{subject} is a file, not a directory: "
                          f"{advice or 'choose another --out'}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{subject} cannot be created ({e.strerror or e}): "
                          f"{advice or 'choose a writable directory'}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{subject} is not writable ({e.strerror or e}): "
                          f"{advice or 'choose a writable directory or fix its permissions'}"
                          ) from None
    return path


@contextmanager
def run_directory(path: str | os.PathLike, resume: bool = False) -> Iterator[Path]:
    """The output directory of a training run, held for as long as the ``with`` lasts:
    created if need be, locked against a second run (``OutputError`` naming the one that
    holds it), cleared of the temporary files of a killed run, with no directory where
    an output file goes. A new run (not ``resume``) is refused where another run has
    left its outputs."""
    path = prepare_output_dir(path)
    lock = _lock(path)
    try:
        remove_stray_temporaries(path)  # only now: a running writer's are its own
        in_the_way = [name for name in RUN_OUTPUTS if (path / name).is_dir()]
        if in_the_way:  # found now, not when the file is due after hours of training
            raise OutputError(f"--out {path} has a directory where the run writes its "
                              f"{in_the_way[0]}: move it, or choose another --out")
        found = [name for name in RUN_OUTPUTS if (path / name).exists()]
        if not resume and found:
            raise OutputError(
                f"--out {path} holds the outputs of another run ({', '.join(found)}): "
                f"continue that run with --resume, or choose another --out")
        if resume and not (path / "checkpoint.pt").exists():
            lost = _outputs_of_a_checkpointed_run(path)
            if lost:  # --resume would start over and overwrite them
                raise OutputError(
                    f"--out {path} holds the outputs of a run ({', '.join(lost)}) but not its "
                    f"checkpoint.pt, so --resume cannot go on with it: put checkpoint.pt back, "
                    f"or choose another --out (move the files away to start over there)")
        yield path
    finally:
        if lock is not None:
            os.close(lock)  # releases the lock; the file stays, for the next run to take


def _outputs_of_a_checkpointed_run(path: Path) -> list[str]:
    """The run outputs in ``path`` if a run there had written a checkpoint: one that
    left rows in ``metrics.jsonl`` (it never runs ahead of the checkpoint) or a
    ``summary.json``. A run killed (or stopped by a full disk) before its first
    checkpoint leaves neither, and --resume starting it over loses nothing."""
    metrics = path / "metrics.jsonl"
    try:
        rows = metrics.is_file() and metrics.stat().st_size > 0
    except OSError:
        rows = False
    if not rows and not (path / "summary.json").exists():
        return []
    return [name for name in ("config.json", "metrics.jsonl", "summary.json", "best.pt")
            if (path / name).exists()]


def remove_stray_temporaries(path: Path) -> None:
    """Remove the ``.NAME.*.tmp`` files a process killed mid-write left in ``path``."""
    for stray in path.glob(f".*{TEMP_SUFFIX}"):
        if not STRAY_TEMP.match(stray.name) or not stray.is_file():
            continue
        try:
            stray.unlink()
        except OSError:
            pass


def _lock(path: Path) -> int | None:
    """Take the directory's lock file, or raise ``OutputError`` naming its holder. None
    where the file system has no locks to offer (the run goes on unguarded)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise OutputError(f"--out {path}: cannot create its lock file {LOCK_NAME} "
                          f"({e.strerror or e}): choose a writable directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise OutputError(f"--out {path} is in use by another run ({holder}): wait for it to "
                          f"end, or choose another --out") from None
    except OSError:  # ENOLCK, EOPNOTSUPP: a network file system without locks
        os.close(fd)
        return None
    command = " ".join([os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]])[:1000]
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
    except OSError:  # a full disk: the lock holds all the same, without the note
        pass
    return fd


def _holder(fd: int, longest: int = 100) -> str:
    """'pid 123 on host, `ppl-ssvae train ...`, since ...' from the lock file's note."""
    try:
        note = json.loads(os.pread(fd, 1 << 16, 0).decode())
        command = note["command"]
        if len(command) > longest:
            command = command[:longest - 3] + "..."
        return f"pid {note['pid']} on {note['host']}, `{command}`, since {note['since']}"
    except (OSError, ValueError, KeyError, TypeError):  # a note half written, or none
        return "its process did not say which it is"
