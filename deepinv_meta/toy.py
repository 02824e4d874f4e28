"""Deprecated alias: the linear-Gaussian toy moved to :mod:`deepinv_meta.benchmarks.theory`, beside its benchmark."""

import warnings

from .benchmarks.theory import (SquareHoleMaskGenerator, hole_corners, mask_of, sample_images,  # noqa: F401
                                smooth_covariance, toy_task)

warnings.warn("deepinv_meta.toy moved to deepinv_meta.benchmarks.theory; this alias will be removed.",
              DeprecationWarning, stacklevel=2)
