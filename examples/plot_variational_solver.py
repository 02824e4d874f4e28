"""
Learned variational solvers: interpolating Lorenz-63 from sparse noisy observations
===================================================================================

Fablet, Drumetz & Rousseau write a reconstruction as the minimiser of a variational cost

.. math::

    U_\\Phi(x, y, \\Omega) = \\lambda_1 \\|x - y\\|^2_\\Omega + \\lambda_2 \\|x - \\Phi(x)\\|^2

and replace its slow gradient descent by a convolutional LSTM fed with :math:`\\nabla_x U_\\Phi`,
trained end to end, possibly jointly with the prior :math:`\\Phi`. Here, in about two minutes of CPU:

1. simulate Lorenz-63 trajectories and observe every 8th time step with noise of variance 2;
2. take the true ODE (one RK4 step) as :math:`\\Phi` and minimise :math:`U_\\Phi` with fixed-step
   gradient descent (FSGD);
3. train an LSTM solver on the same cost, and a 2S-CNN prior jointly with its LSTM solver;
4. compare reconstructions and energy pathways.

Nothing is downloaded (the data are simulated with scipy). The full benchmark,
``deepinv-meta benchmark variational``, adds MNIST inpainting (Table 1) and Lorenz-96.
"""

# %%
# Data and observation model
# --------------------------
# Series of ``D`` components and ``T`` steps are ``(B, D, 1, T)`` tensors, so deepinv's
# ``Inpainting`` physics applies, with masks drawn by a ``TimeSeriesMaskGenerator``.

import math

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_meta import Task
from deepinv_meta.bilevel import train_end_to_end
from deepinv_meta.dynamics import sample_sequences, simulate
from deepinv_meta.models import FSGD, LSTMSolver, ODEPrior, TwoScaleCNN, VariationalCost, VariationalReconstructor
from deepinv_meta.physics import TimeSeriesMaskGenerator

torch.manual_seed(0)
length = 200
trajectory = simulate("lorenz63", 6000)
train = sample_sequences(trajectory[:4500], count=256, length=length, seed=0)
test = sample_sequences(trajectory[4500:], count=32, length=length, seed=1)
offset, scale = train.mean().item(), train.std().item()  # standardise: the networks see O(1) values
train, test = (train - offset) / scale, (test - offset) / scale

size = (3, 1, length)
noise = dinv.physics.GaussianNoise(math.sqrt(2.0) / scale, rng=torch.Generator())
physics = dinv.physics.Inpainting(size, mask=torch.ones(size), noise_model=noise)
generator = TimeSeriesMaskGenerator(components=3, length=length, every=8)
physics.update(**generator.step(batch_size=len(test), seed=0))
y_test = physics(test)
task = Task("lorenz63", physics, train, train, generator=generator)


def nmse(model):
    """Mean squared error over the test series, divided by their variance (the paper's R-score)."""
    physics.update(**generator.step(batch_size=len(test), seed=0))
    with torch.no_grad():
        return ((model.eval()(y_test, physics) - test) ** 2).mean().item() / test.var().item()


# %%
# FSGD on the cost with the true ODE
# ----------------------------------
# :math:`\Phi(x)_{t+1} = \mathrm{RK4}(x_t)`: the cost is small only on trajectories of Lorenz-63.
# Gradient descent needs hundreds of steps to spread the sparse observations along time.

# Every solver starts from the observations interpolated linearly in time (``init="interpolation"``,
# as the authors' code) instead of the zero-filled :math:`A^\top y`: a better start for the
# 20-step learned solvers.

ode = ODEPrior("lorenz63", offset=offset, scale=scale)
fsgd = VariationalReconstructor(VariationalCost(ode), FSGD(iterations=500, stepsize=100.0), init="interpolation")
print(f"RK4 + FSGD (500 steps): R-score {nmse(fsgd):.4f}")

# %%
# A learned solver for the same cost, and a jointly learned cost
# --------------------------------------------------------------
# ``train_end_to_end`` grows the solver from 5 to 20 iterations and minimises
# :math:`\|x - \tilde x\|^2 + 0.05\|x - \Phi(x)\|^2 + 0.05\|\tilde x - \Phi(\tilde x)\|^2`.

lstm = VariationalReconstructor(VariationalCost(ode), LSTMSolver(3, hidden_channels=20, kernel_size=(1, 3)),
                                init="interpolation")
train_end_to_end(lstm, [task], steps=10**6, iterations=(5, 20), joint=False, lr=1e-2, batch_size=16,
                 max_time=40, device="cpu", progress=False)
print(f"RK4 + LSTM-S (20 steps): R-score {nmse(lstm):.4f}")

cnn = TwoScaleCNN(3, hidden=30, kernel_size=(1, 3), scale=(1, 4))
joint = VariationalReconstructor(VariationalCost(cnn, learn_weights=True),
                                 LSTMSolver(3, hidden_channels=20, kernel_size=(1, 3)), init="interpolation")
train_end_to_end(joint, [task], steps=10**6, iterations=(5, 20), joint=True, lr=3e-3, batch_size=16,
                 max_time=40, device="cpu", progress=False)
print(f"2S-CNN + LSTM-S, joint (20 steps): R-score {nmse(joint):.4f}")

# %%
# Reconstructions and energy pathways
# -----------------------------------
# The energy pathway is the cost :math:`U_\Phi(x^{(k)})` along the solver's iterations (Figure 1 of
# the paper): the LSTM solver lowers the same cost as FSGD in far fewer steps.

physics.update(mask=generator.step(batch_size=len(test), seed=0)["mask"][:1])
pathways = {}
for name, model in (("RK4 + FSGD", fsgd), ("RK4 + LSTM-S", lstm)):
    costs = []
    with torch.no_grad():
        model(y_test[:1], physics, callback=lambda k, x: costs.append(model.cost(x, y_test[:1], physics).item()))
    pathways[name] = costs

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
t = torch.arange(length)
observed = physics.mask[0, 0, 0].bool()
with torch.no_grad():
    axes[0].plot(t, test[0, 0, 0], "k", label="truth")
    axes[0].plot(t[observed], y_test[0, 0, 0][observed], "k.", label="observed")
    for name, model in (("RK4 + FSGD", fsgd), ("RK4 + LSTM-S", lstm), ("2S-CNN + LSTM-S", joint)):
        axes[0].plot(t, model(y_test[:1], physics)[0, 0, 0], label=name)
axes[0].set_title("first component of a test series (standardised)")
axes[0].set_xlabel("time step")
axes[0].legend(fontsize=8)
for name, costs in pathways.items():
    axes[1].loglog(range(1, len(costs) + 1), costs, label=name)
axes[1].set_xlabel("solver iteration")
axes[1].set_ylabel("cost U")
axes[1].set_title("energy pathways")
axes[1].legend()
fig.tight_layout()
plt.show()
