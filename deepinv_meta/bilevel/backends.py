"""Which CPU convolution back-end a model's training and fine-tuning steps run on.

PyTorch runs CPU convolutions through oneDNN (``mkldnn``) by default. For MetaPDNet's layers, a convolution
from the image to its feature maps and back (one input or one output channel), PyTorch's native kernels are
faster, forward and backward; a model whose class sets ``prefers_native_convolutions = True`` is therefore
trained and fine-tuned with oneDNN off (measurements in docs/performance.rst). Models with wide convolutions
(DnCNN, the Deep Image Prior generator) are faster with oneDNN and keep it. The flag is global in PyTorch and
read again when autograd runs the backward pass, so the whole step, backward included, runs inside
:func:`convolution_backend`; it is restored on exit.
"""

from __future__ import annotations

import contextlib

import torch


def convolution_backend(model) -> contextlib.AbstractContextManager:
    """A context with oneDNN convolutions off if ``model`` prefers PyTorch's native ones, else one that does nothing.

    :Examples:

    >>> import torch
    >>> from deepinv_meta import MetaPDNet
    >>> from deepinv_meta.bilevel.backends import convolution_backend
    >>> with convolution_backend(MetaPDNet(depth=2, channels=4)):
    ...     torch.backends.mkldnn.enabled
    False
    >>> with convolution_backend(torch.nn.Conv2d(64, 64, 3)):
    ...     torch.backends.mkldnn.enabled == torch.backends.mkldnn.is_available()
    True
    """
    if getattr(model, "prefers_native_convolutions", False):
        return _onednn_off()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _onednn_off():
    # the flag alone: torch.backends.mkldnn.flags() also resets oneDNN's TF32 setting, with a warning each time
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
