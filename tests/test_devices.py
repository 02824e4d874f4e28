"""Everything runs on the device it is given: each test runs on the CPU, and again on CUDA where there is a GPU
(skipped otherwise). The float32 meta-gradient on the device must equal a float64 CPU one on the same episodes."""

import copy

import deepinv as dinv
import pytest
import torch
from helpers import make_trainer

from deepinv_meta import InnerLoop, MetaPDNet, finetune, load
from deepinv_meta.losses import data_loss, supervised_loss
from deepinv_meta.models import (FixedPoint, GradientDescent, LSTMSolver, MetaDIP, MetaRED, MetaSIREN, TwoScaleCNN,
                                 VariationalCost, VariationalReconstructor)

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


@pytest.fixture(autouse=True)
def _full_precision_float32():
    """TF32 convolutions and matmuls (CUDA's default for convolutions) differ from the CPU by ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def meta_gradient(model, episodes, device, dtype=torch.float32):
    """Meta-gradient of the summed outer losses of MAML (2 inner SGD steps, unsupervised) on ``device``.

    SGD, not Adam: Adam's first steps are close to sign(g), so float32 rounding of tiny gradient entries moves
    the meta-gradient (measured: 4e-4 relative in norm, 4 % on single entries, against 2e-7 with SGD)."""
    model = copy.deepcopy(model).to(device, dtype)
    inner = InnerLoop(steps=2, lr=0.1, optimizer="sgd")
    total = 0.0
    for episode in episodes:
        physics = copy.deepcopy(episode.physics).to(device, dtype)
        y_train, y_test = episode.y_train.to(device, dtype), episode.y_test.to(device, dtype)
        result = inner.run(model, lambda f, k: data_loss("unsupervised", f(y_train, physics), y_train, physics))
        total = total + supervised_loss(result(y_test, physics), episode.target_test.to(device, dtype))
    total.backward()
    assert all(p.device.type == device and p.dtype == dtype for p in model.parameters())
    return [p.grad.cpu().double() for p in model.parameters()]


@pytest.mark.parametrize("device", DEVICES)
def test_meta_gradients_on_the_device_equal_float64_cpu_ones(device, small_tasks):
    episodes = [task.episode(2, seed=i) for i, task in enumerate(small_tasks)]  # drawn once, on the CPU
    model = MetaPDNet(depth=3, channels=6)
    reference, on_device = meta_gradient(model, episodes, "cpu", torch.float64), meta_gradient(model, episodes, device)
    scale = max(g.abs().max() for g in reference)
    assert scale > 0
    for a, b in zip(reference, on_device):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("device", DEVICES)
def test_meta_training_finetuning_and_checkpoints_on_the_device(device, small_tasks, tmp_path):
    trainer = make_trainer(small_tasks, device=device, checkpoint=tmp_path / "run.pt")
    trainer.train(steps=2)
    assert not any(record["skipped"] for record in trainer.history)
    assert all(p.device.type == device for p in trainer.model.parameters())
    assert next(load(tmp_path / "run.pt").parameters()).device.type == "cpu"  # loadable without the GPU
    resumed = make_trainer(small_tasks, device=device, checkpoint=tmp_path / "run.pt")
    assert resumed.step == 2 and next(resumed.model.parameters()).device.type == device

    physics = dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter="bicubic", device=device)
    y = physics(torch.rand(2, 1, 16, 16, device=device))
    adapted = finetune(trainer.model, physics, y, steps=2, optimizer="sgd", lr=1e-2, momentum=0.5)
    with torch.no_grad():
        x_hat = adapted(y, physics)
    assert x_hat.device.type == device and torch.isfinite(x_hat).all()


def small_reconstructors():
    """Small instances of the models whose forward pass runs the inner loop."""
    denoiser = dinv.models.DnCNN(1, 1, pretrained=None, depth=2, nf=4)
    return {
        "MetaDIP": MetaDIP((1, 16, 16), steps=2, channels=(8, 16), latent_channels=4, fourier_features=4),
        "MetaSIREN": MetaSIREN((1, 16, 16), solver=GradientDescent(1, 0.9), steps=2, hidden=8, layers=2),
        "MetaRED": MetaRED((1, 16, 16), denoiser, red_iterations=1, steps=1, hidden=8, layers=2),
        "2S-CNN + LSTM-S": VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=2)), LSTMSolver(1, 2)),
        "2S-CNN + FP(1)": VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=2)), FixedPoint(1)),
    }


@pytest.mark.parametrize("name", list(small_reconstructors()))
@pytest.mark.parametrize("device", DEVICES)
def test_reconstructors_run_on_the_device_under_no_grad(device, name):
    model = small_reconstructors()[name].to(device).eval()
    physics = dinv.physics.Inpainting(img_size=(1, 16, 16), mask=0.7, device=device,
                                      rng=torch.Generator(device).manual_seed(0))
    y = physics(torch.rand(2, 1, 16, 16, device=device))
    with torch.no_grad():  # as dinv.test evaluates
        x_hat = model(y, physics)
    assert x_hat.shape == (2, 1, 16, 16) and x_hat.device.type == device and torch.isfinite(x_hat).all()


@pytest.mark.parametrize("device", DEVICES)
def test_a_campaign_runs_resumes_and_exports_on_the_device(device, tmp_path, monkeypatch):
    """The campaign machinery on the device: a chunk, a checkpoint, a resume, a zoo export loadable on the CPU."""
    import json

    from helpers import make_small_tasks

    from deepinv_meta import campaign as campaign_module
    from deepinv_meta import pretrained
    from deepinv_meta.campaign import Run, Setup, run_campaign

    def build(root, device):
        tasks = make_small_tasks()
        return Setup(trainer_args=dict(inner=InnerLoop(steps=1), inner_loss="unsupervised", batch_size=2),
                     model=MetaPDNet(depth=2, channels=4), tasks=tasks, validation_tasks=None,
                     provenance={"training_data": "random", "tasks": [t.name for t in tasks], "validation": "MSE"})

    monkeypatch.setitem(campaign_module.CAMPAIGNS, "tiny", [Run("tiny-model", build)])
    monkeypatch.setenv("DEEPINV_META_DATA", str(tmp_path))
    for _ in range(2):
        records = run_campaign("tiny", 0.02, device=device, folder=tmp_path / "c", chunk_minutes=0.02,
                               zoo=tmp_path / "zoo", log=lambda m: None)
    assert records[0]["device"] == torch.device(device).type
    state = json.loads((tmp_path / "c" / "tiny" / "tiny-model.json").read_text())
    assert state["gpu_minutes" if device == "cuda" else "cpu_minutes"] > 0 and state["steps"] >= 2
    assert next(pretrained.load("tiny-model", zoo=tmp_path / "zoo").parameters()).device.type == "cpu"
