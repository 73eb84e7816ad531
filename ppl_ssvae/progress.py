"""Progress of a training run on stderr, suited to where it goes."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_EVERY_SECONDS = 60.0  # progress lines when stderr is not a terminal
FIELDS_EVERY = 20  # steps between refreshes of the numbers a progress line shows


def step_fields(step: int, total: int, terms: dict | None, best_valid_accuracy: float,
                examples: int, seconds: float) -> dict[str, str]:
    """The numbers to show after ``step``, refreshed every ``FIELDS_EVERY`` steps and at
    the last (none in between): the step's loss ("nan" for a skipped one), the best
    validation accuracy so far (once one has been measured), and examples per second over
    ``examples`` in ``seconds``."""
    if step % FIELDS_EVERY and step != total:
        return {}
    return dict(loss=f"{terms['loss']:.1f}" if terms else "nan",
                **best_accuracy(best_valid_accuracy), ex_s=f"{examples / seconds:.0f}")


def best_accuracy(best_valid_accuracy: float) -> dict[str, str]:
    """The progress line's best_acc, once an accuracy has been measured (-1 before)."""
    return {"best_acc": f"{best_valid_accuracy:.3f}"} if best_valid_accuracy >= 0 else {}


class Progress:
    """Progress on stderr, suited to where it goes: on a terminal a tqdm bar, redrawn
    in place; elsewhere (a log file, ``nohup``, CI) a plain line at most every
    ``every`` seconds and one per finished epoch, instead of a redraw per update.
    ``enabled=False`` writes nothing but ``write``'s messages; ``messages=False`` (the
    ranks other than 0 of a torchrun, which do not report) not even those."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True,
                 stream=None, every: float = LOG_EVERY_SECONDS, clock=time.monotonic,
                 messages: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.step, self.desc, self.enabled = total, initial, desc, enabled
        self.messages = messages
        self.every, self.clock = every, clock
        self.postfix: dict[str, str] = {}
        self.started = self.last = clock()
        self.started_at = initial
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                        desc=desc, file=self.stream) if terminal else None

    def update(self, **postfix: str) -> None:
        """One step taken; ``postfix``: the numbers to show (loss, accuracy ...)."""
        self.step += 1
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update()
            if postfix:
                self.bar.set_postfix(**postfix)
        elif self.enabled and self.clock() - self.last >= self.every:
            self._line()

    def epoch_done(self, epoch: int, valid_accuracy: float) -> None:
        if self.bar is None and self.enabled:
            self._line(f"epoch {epoch} done, valid_acc={valid_accuracy:.4f}")

    def stopped_in_epoch(self, epoch: int, fraction: float, valid_accuracy: float) -> None:
        """--max-steps or --time-limit reached inside an epoch, which stays open."""
        if self.bar is None and self.enabled:
            self._line(f"stopped {fraction:.2f} into epoch {epoch}, valid_acc={valid_accuracy:.4f}")

    def stopped_at_accuracy(self, best: dict, target: float, epoch: int) -> None:
        """--stop-at-accuracy reached: ``best`` is the best-validation record."""
        if self.messages:
            self.write(f"ppl-ssvae: validation accuracy {best['valid_accuracy']:.4f} (epoch "
                       f"{best['epoch']}) reached --stop-at-accuracy {target}: stopping after "
                       f"epoch {epoch}")

    def _line(self, extra: str = "") -> None:
        self.last = now = self.clock()
        rate = (self.step - self.started_at) / max(now - self.started, 1e-9)
        fields = [f"{k}={v}" for k, v in self.postfix.items()] + ([extra] if extra else [])
        print(f"{self.desc}: step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%), "
              f"{rate:.1f} steps/s" + "".join(f", {f}" for f in fields),
              file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A message that must be seen, on its own line."""
        if not self.messages:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
