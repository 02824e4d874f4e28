"""Deprecated alias: the Gaussian Bayes estimator moved to :mod:`deepinv_meta.benchmarks.theory`, beside its benchmark."""

import warnings

from ..benchmarks.theory import (GaussianBayesEstimator, gaussian_bayes_estimator, kernel_image_bases,  # noqa: F401
                                 operator_matrix, shared_kernel_rows)

warnings.warn("deepinv_meta.models.bayes moved to deepinv_meta.benchmarks.theory; this alias will be removed.",
              DeprecationWarning, stacklevel=2)
