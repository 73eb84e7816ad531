"""Inference networks q(...): one file per guide, each a plain Pyro callable."""

from .dirichlet import DirichletGuide
from .logistic_normal_prior import LogisticNormalPriorGuide
from .m2 import M2Guide
from .mlp import ClassifierGuide

__all__ = ["ClassifierGuide", "DirichletGuide", "LogisticNormalPriorGuide", "M2Guide"]
