"""Meta-learnable reconstructors, all ``deepinv.models.Reconstructor`` (``model(y, physics)``)."""

from .dip import MetaDIP
from .linear import LinearModel
from .pdnet import MetaPDNet
from .siren import SIREN, MetaRED, MetaSIREN
from .solvers import GradientDescent, REDFixedPoint
from .test_time import TestTimeOptimizer
from .variational import (FSGD, AutoEncoderPrior, FixedPoint, LSTMSolver, ODEPrior, PCAPrior, TwoScaleCNN,
                          VariationalCost, VariationalReconstructor)

__all__ = ["MetaPDNet", "MetaDIP", "LinearModel", "SIREN", "MetaSIREN", "MetaRED", "GradientDescent", "REDFixedPoint",
           "TestTimeOptimizer", "VariationalCost", "VariationalReconstructor", "PCAPrior", "AutoEncoderPrior",
           "TwoScaleCNN", "ODEPrior", "FSGD", "FixedPoint", "LSTMSolver"]
