"""ppl-ssvae: semi-supervised variational autoencoders as Pyro model/guide pairs."""

from ppl_ssvae.batch import Batch, one_hot
from ppl_ssvae.config import Settings
from ppl_ssvae.data import load_mnist
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.registry import MODELS, build

__version__ = "0.1.0"
__all__ = ["Batch", "MODELS", "SSVAE", "Settings", "build", "load_mnist", "one_hot", "train"]


def train(settings: Settings) -> dict:
    """Train as ``settings`` say; see ``ppl_ssvae.train.train``."""
    from ppl_ssvae.train import train as _train

    return _train(settings)
