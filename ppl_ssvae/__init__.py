"""ppl-ssvae: semi-supervised variational autoencoders as Pyro model/guide pairs."""

from contextlib import contextmanager as _contextmanager


@_contextmanager
def _quiet_interrupt():
    """When this process is the ``ppl-ssvae`` command, a Ctrl-C while torch and Pyro are
    being imported (the first second or two) ends it with one line and status 130, not a
    50-line traceback from deep inside an import. A library user's process is left
    alone."""
    import os
    import signal
    import sys
    import threading

    argv = getattr(sys, "orig_argv", [])
    command = (os.path.basename(sys.argv[0]) if sys.argv else "") == "ppl-ssvae" or any(
        a == "-m" and b == "ppl_ssvae" for a, b in zip(argv, argv[1:], strict=False))
    if (not command or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def interrupted(signum, frame):
        print("ppl-ssvae: interrupted", file=sys.stderr, flush=True)
        os._exit(130)  # at once: no half-imported module gets to catch an exception

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


with _quiet_interrupt():
    import ppl_ssvae.train as _train_module
    from ppl_ssvae.batch import Batch, one_hot
    from ppl_ssvae.config import Settings
    from ppl_ssvae.data import load_mnist
    from ppl_ssvae.objective import SSVAE
    from ppl_ssvae.registry import MODELS, build
    from ppl_ssvae.run import Run, load_run

__version__ = "0.1.0"


class _CallableModule(type(_train_module)):
    """``ppl_ssvae.train`` is the module (``import ppl_ssvae.train`` gives it, as Python's
    import system expects), and calling it calls ``ppl_ssvae.train.train``: so
    ``ppl_ssvae.train(settings)`` and ``from ppl_ssvae import train; train(settings)``
    work as they always have."""

    def __call__(self, settings, data=None) -> dict:
        return self.train(settings, data)


_train_module.__class__ = _CallableModule
train = _train_module
__all__ = ["Batch", "MODELS", "Run", "SSVAE", "SSVAEClassifier", "Settings", "build",
           "load_mnist", "load_run", "one_hot", "train"]


def __getattr__(name: str):
    # the scikit-learn estimator imports scikit-learn (an optional extra): only on demand
    if name == "SSVAEClassifier":
        from ppl_ssvae.estimator import SSVAEClassifier

        return SSVAEClassifier
    raise AttributeError(f"module 'ppl_ssvae' has no attribute {name!r}")
