"""Inference networks q(...): one file per guide, each a plain Pyro callable."""

from .adgm import ADGMGuide
from .dirichlet import DirichletGuide
from .logistic_normal_prior import LogisticNormalPriorGuide
from .m2 import M2Guide
from .mlp import ClassifierGuide

__all__ = ["ADGMGuide", "ClassifierGuide", "DirichletGuide", "LogisticNormalPriorGuide", "M2Guide"]
