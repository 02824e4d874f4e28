"""deepinv-meta: meta-learning for imaging inverse problems, as a DeepInverse plugin."""

__version__ = "0.1.0"

from .bilevel import InnerLoop, MetaTrainer, NonFiniteLossError, OuterOptimizer, SupervisedTrainer, finetune
from .io import load, save
from .models import LinearModel, MetaPDNet
from .tasks import Task, meta_prior_tasks
from . import pretrained  # noqa: E402  (the zoo: deepinv_meta.pretrained.available() / load(name))

__all__ = [
    "MetaPDNet",
    "LinearModel",
    "MetaTrainer",
    "SupervisedTrainer",
    "InnerLoop",
    "OuterOptimizer",
    "NonFiniteLossError",
    "finetune",
    "Task",
    "meta_prior_tasks",
    "save",
    "load",
    "pretrained",
]
