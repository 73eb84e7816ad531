"""Generative models p(x, y, z, ...): one file per model, each a plain Pyro callable."""

from .adgm import ADGM
from .dirichlet import DirichletPrior
from .logistic_normal_prior import LogisticNormalPrior
from .m2 import M2
from .mlp import Classifier

__all__ = ["ADGM", "Classifier", "DirichletPrior", "LogisticNormalPrior", "M2"]
