"""Experiment behind docs/performance.rst (MetaPDNet fine-tuning step): the committed dual projection against two
bit-equal forms (min/max with one saved sign mask, float32 or int8), alternating rounds, weights compared.
Run: python projection_forms.py (one thread)."""
import time, torch
torch.set_num_threads(1)
from deepinv_meta import MetaPDNet, finetune
import deepinv_meta.models.pdnet as pd
from deepinv_meta.data import embedded_images, extract_patches
from deepinv_meta.physics import decimation
class P1(torch.autograd.Function):
    generate_vmap_rule = True
    @staticmethod
    def forward(v, radius):
        return torch.minimum(torch.maximum(v, -radius), radius)
    @staticmethod
    def setup_context(ctx, inputs, output):
        v, radius = inputs
        ctx.save_for_backward((v - output).sign_())
    @staticmethod
    def backward(ctx, grad):
        sign, = ctx.saved_tensors
        gs = grad * sign
        return grad - gs * sign, gs.sum()
class P2(P1):
    @staticmethod
    def setup_context(ctx, inputs, output):
        v, radius = inputs
        ctx.save_for_backward((v - output).sign_().to(torch.int8))
old = pd.project_linf_ball
torch.manual_seed(0)
x = extract_patches(embedded_images(), 64)[:16]
physics = decimation((1, 64, 64), factor=2)
y = physics(x)
res = {}
for rnd in range(6):
    for name, f in [("old", old), ("float", P1.apply), ("int8", P2.apply)]:
        pd.project_linf_ball = f
        torch.manual_seed(1)
        model = MetaPDNet(depth=20, channels=32)
        t = time.perf_counter()
        finetune(model, physics, y, steps=4, loss="unsupervised")
        dt = (time.perf_counter() - t) / 4
        res.setdefault(name, []).append(dt)
        if rnd == 0:
            res.setdefault("w_" + name, model.weight.detach().clone())
print({k: [round(x, 3) for x in v] for k, v in res.items() if not k.startswith("w_")})
print("weights equal float", torch.equal(res["w_old"], res["w_float"]), "int8", torch.equal(res["w_old"], res["w_int8"]))
