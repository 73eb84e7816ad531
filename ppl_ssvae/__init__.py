"""ppl-ssvae: semi-supervised variational autoencoders as Pyro model/guide pairs."""

from ppl_ssvae.batch import Batch, one_hot
from ppl_ssvae.config import Settings
from ppl_ssvae.data import load_mnist
from ppl_ssvae.objective import SSVAE
from ppl_ssvae.registry import MODELS, build
from ppl_ssvae.train import train  # after the submodule import, so `ppl_ssvae.train` is the function

__version__ = "0.1.0"
__all__ = ["Batch", "MODELS", "SSVAE", "Settings", "build", "load_mnist", "one_hot", "train"]

