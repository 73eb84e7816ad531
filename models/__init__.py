"""Generative models p(x, y, z, ...): one file per model, each a plain Pyro callable."""

from .adgm import ADGM
from .dirichlet import DirichletPrior
from .hierarchical import Hierarchical
from .logistic_normal_prior import LogisticNormalPrior
from .m2 import M2
from .mlp import Classifier, TwoDigitClassifier
from .two_digit import TwoDigit

__all__ = ["ADGM", "Classifier", "DirichletPrior", "Hierarchical", "LogisticNormalPrior", "M2",
           "TwoDigit", "TwoDigitClassifier"]
