r"""Lorenz-63 and Lorenz-96 dynamics: vector fields, an RK4 step, and simulated datasets (Fablet et al., appendix A).

.. math::

    \text{L63:}\quad \dot X_1 = \sigma(X_2 - X_1),\quad \dot X_2 = \rho X_1 - X_2 - X_1 X_3,\quad
    \dot X_3 = X_1 X_2 - \beta X_3, \qquad
    \text{L96:}\quad \dot x_i = (x_{i+1} - x_{i-2})\,x_{i-1} - x_i + F.

Series are returned as ``(N, D, 1, T)`` tensors (see :mod:`deepinv_meta.physics`). The reference
trajectories are integrated with scipy's adaptive RK45 (Dormand-Prince), as in the paper; the
:func:`rk4_step` used inside the ODE prior is a fixed-step approximation of it.
"""

from __future__ import annotations

import numpy as np
import torch

SYSTEMS = {
    # name: (dimension, time step, default parameters)
    "lorenz63": (3, 0.01, {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}),
    "lorenz96": (40, 0.05, {"forcing": 8.0}),
}


def check_system(name: str) -> str:
    if name not in SYSTEMS:
        raise ValueError(f"Unknown dynamical system {name!r}; use one of {sorted(SYSTEMS)}.")
    return name


def lorenz63_field(x: torch.Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> torch.Tensor:
    """Lorenz-63 vector field; ``x`` has the 3 components on dimension 1."""
    x1, x2, x3 = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack((sigma * (x2 - x1), rho * x1 - x2 - x1 * x3, x1 * x2 - beta * x3), dim=1)


def lorenz96_field(x: torch.Tensor, forcing: float = 8.0) -> torch.Tensor:
    """Lorenz-96 vector field with periodic boundary; ``x`` has the components on dimension 1."""
    return (torch.roll(x, -1, dims=1) - torch.roll(x, 2, dims=1)) * torch.roll(x, 1, dims=1) - x + forcing


def vector_field(name: str):
    """The vector field ``f(x)`` of a system by name, with its default parameters."""
    field = {"lorenz63": lorenz63_field, "lorenz96": lorenz96_field}[check_system(name)]
    params = SYSTEMS[name][2]
    return lambda x: field(x, **params)


def rk4_step(field, x: torch.Tensor, dt: float) -> torch.Tensor:
    """One fourth-order Runge-Kutta step of ``dx/dt = field(x)``."""
    k1 = field(x)
    k2 = field(x + 0.5 * dt * k1)
    k3 = field(x + 0.5 * dt * k2)
    k4 = field(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def simulate(name: str, steps: int, *, spin_up: int = 1000, seed: int = 0) -> np.ndarray:
    """Integrate a system with scipy's RK45 on its time grid; returns ``(steps, D)`` after ``spin_up`` steps.

    The spin-up from a random initial condition puts the trajectory on the attractor.
    """
    from scipy.integrate import solve_ivp

    dim, dt, _ = SYSTEMS[check_system(name)]
    field = vector_field(name)
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=dim) + (8.0 if name == "lorenz96" else 0.0)

    def rhs(_, x):
        return field(torch.from_numpy(x)[None])[0].numpy()

    times = dt * np.arange(spin_up + steps)
    solution = solve_ivp(rhs, (0.0, times[-1]), x0, method="RK45", t_eval=times, rtol=1e-9, atol=1e-9)
    if not solution.success:
        raise RuntimeError(f"simulation of {name} failed: {solution.message}")
    return solution.y.T[spin_up:].astype(np.float32)


def sample_sequences(trajectory: np.ndarray, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """``count`` windows of ``length`` steps at random starts in a ``(steps, D)`` trajectory, as ``(count, D, 1, length)``."""
    if len(trajectory) < length:
        raise ValueError(f"trajectory of {len(trajectory)} steps is shorter than the sequence length {length}.")
    starts = np.random.default_rng(seed).integers(0, len(trajectory) - length + 1, size=count)
    windows = np.stack([trajectory[s:s + length].T for s in starts])
    return torch.from_numpy(windows)[:, :, None, :]
