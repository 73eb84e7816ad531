"""Generative models p(x, y, z, ...): one file per model, each a plain Pyro callable."""

from .adgm import ADGM
from .m2 import M2

__all__ = ["ADGM", "M2"]
