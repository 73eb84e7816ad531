"""Inference networks q(...): one file per guide, each a plain Pyro callable."""

from .m2 import M2Guide

__all__ = ["M2Guide"]
