"""ppl-ssvae: semi-supervised variational autoencoders as Pyro model/guide pairs."""

from ppl_ssvae.batch import Batch, one_hot
from ppl_ssvae.config import Settings
from ppl_ssvae.data import load_mnist
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.registry import MODELS, build
from ppl_ssvae.run import Run, load_run
from ppl_ssvae.train import train  # after the submodule import, so `ppl_ssvae.train` is the function

__version__ = "0.1.0"
__all__ = ["Batch", "MODELS", "Run", "SSVAE", "SSVAEClassifier", "Settings", "build",
           "load_mnist", "load_run", "one_hot", "train"]


def __getattr__(name: str):
    # the scikit-learn estimator imports scikit-learn (an optional extra): only on demand
    if name == "SSVAEClassifier":
        from ppl_ssvae.estimator import SSVAEClassifier

        return SSVAEClassifier
    raise AttributeError(f"module 'ppl_ssvae' has no attribute {name!r}")
