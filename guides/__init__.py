"""Inference networks q(...): one file per guide, each a plain Pyro callable."""

from .adgm import ADGMGuide
from .m2 import M2Guide

__all__ = ["ADGMGuide", "M2Guide"]
