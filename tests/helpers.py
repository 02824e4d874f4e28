"""Small, fast problems shared by the tests (importable from subprocesses too)."""

import torch


def make_small_tasks():
    """The four Meta-Prior tasks on smooth random 16x16 images (fast on CPU)."""
    from deepinv_meta.tasks import meta_prior_tasks

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.avg_pool2d(torch.rand(24, 1, 32, 32, generator=g), 3, 1, 1)
    return meta_prior_tasks(images[:, :, :16, :16], images[:6, :, 16:, 16:], blur_psf_size=5)


def make_trainer(tasks, **kwargs):
    """A small MetaPDNet trainer with a fixed initialisation."""
    from deepinv_meta import MetaPDNet, MetaTrainer

    torch.manual_seed(0)
    defaults = dict(inner_loss="unsupervised", inner_steps=2, inner_lr=1e-3, batch_size=2, progress=False, device="cpu")
    defaults.update(kwargs)
    return MetaTrainer(MetaPDNet(depth=3, channels=6), tasks, **defaults)
