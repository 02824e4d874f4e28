"""The bilevel engine shared by every meta-model: inner loop (on ``higher``), trainer, fine-tuning."""

from .end_to_end import fit_prior, train_end_to_end
from .finetune import finetune
from .inner import InnerLoop, InnerResult, NonFiniteLossError
from .optimizers import DifferentiableAdam
from .supervised import SupervisedTrainer
from .trainer import MetaTrainer, OuterOptimizer

__all__ = ["InnerLoop", "InnerResult", "NonFiniteLossError", "DifferentiableAdam", "MetaTrainer", "SupervisedTrainer", "OuterOptimizer", "finetune", "train_end_to_end", "fit_prior"]
