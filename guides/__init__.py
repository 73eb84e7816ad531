"""Inference networks q(...): one file per guide, each a plain Pyro callable."""

from .adgm import ADGMGuide
from .dirichlet import DirichletGuide
from .hierarchical import HierarchicalGuide
from .logistic_normal_prior import LogisticNormalPriorGuide
from .m2 import M2Guide
from .mlp import ClassifierGuide, TwoDigitClassifierGuide
from .two_digit import TwoDigitGuide

__all__ = ["ADGMGuide", "ClassifierGuide", "DirichletGuide", "HierarchicalGuide",
           "LogisticNormalPriorGuide", "M2Guide", "TwoDigitClassifierGuide", "TwoDigitGuide"]
