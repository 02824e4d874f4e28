"""finetune(): adapts a copy, never the meta-model; works under no_grad; clear errors."""

import copy
import math

import deepinv as dinv
import pytest
import torch

from deepinv_meta import MetaPDNet, finetune


def sr_problem():
    physics = dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter="bicubic")
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 16, 16), 3, 1, 1)
    return physics, x, physics(x)


@pytest.mark.parametrize("loss", ["unsupervised", "supervised"])
def test_finetune_improves_its_loss_and_leaves_the_meta_model_alone(loss):
    physics, x, y = sr_problem()
    model = MetaPDNet(depth=4, channels=8)
    before = [p.detach().clone() for p in model.parameters()]
    adapted, losses = finetune(model, physics, y, x=x, steps=15, loss=loss, lr=1e-2, return_losses=True)
    assert losses[-1] < losses[0]
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), adapted.parameters()))
    assert isinstance(adapted, MetaPDNet) and adapted(y, physics).shape == x.shape


def test_finetune_works_under_no_grad_like_dinv_test():
    physics, x, y = sr_problem()
    with torch.no_grad():
        adapted = finetune(MetaPDNet(depth=2, channels=4), physics, y, steps=2)
    assert any(p.requires_grad for p in adapted.parameters())


def test_finetune_with_minibatches():
    physics, x, y = sr_problem()
    adapted = finetune(MetaPDNet(depth=2, channels=4), physics, y, x=x, steps=3, loss="supervised", batch_size=2)
    assert adapted(y, physics).shape == x.shape


@pytest.mark.parametrize("loss, lam", [("supervised", 0.0), ("unsupervised", 0.5)])
def test_finetuning_in_chunks_takes_the_same_steps_as_the_whole_batch(loss, lam):
    """Chunks bound the memory of a step; their summed gradients are the whole batch's (Adam, proximal term)."""
    from deepinv_meta.bilevel import InnerLoop

    # double precision: Adam divides each gradient entry by its own size, so float32 rounding of entries near 0
    # (summed in another order by the chunks) could flip their sign and the step's direction
    torch.manual_seed(0)
    physics, x, y = sr_problem()
    physics, x, y = physics.double(), x.double(), y.double()
    model = MetaPDNet(depth=3, channels=6).double()
    inner = InnerLoop(steps=4, lr=1e-2, lam=lam)
    whole, whole_losses = finetune(model, physics, y, x=x, inner=inner, loss=loss, return_losses=True)
    chunked, chunked_losses = finetune(model, physics, y, x=x, inner=inner, loss=loss, chunk_size=3,
                                       return_losses=True)  # chunks of 3 and 1 measurements
    for a, b in zip(whole.parameters(), chunked.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert chunked_losses == pytest.approx(whole_losses, rel=1e-10)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), chunked.parameters()))


def test_a_data_term_in_parts_is_refused_where_it_would_be_differentiated_twice():
    from deepinv_meta.bilevel import InnerLoop
    from deepinv_meta.bilevel.inner import DataTermInParts

    model, x = torch.nn.Linear(2, 2), torch.randn(4, 2)
    with pytest.raises(ValueError, match="cannot be differentiated twice"):
        InnerLoop(steps=1).run(model, lambda f, k: DataTermInParts([lambda: f(x).sum()]))


def test_finetune_bad_inputs():
    physics, x, y = sr_problem()
    model = MetaPDNet(depth=2, channels=4)
    with pytest.raises(ValueError, match="ground truth"):
        finetune(model, physics, y, loss="supervised")
    with pytest.raises(ValueError, match="Unknown inner loss"):
        finetune(model, physics, y, loss="mse")
    with pytest.raises(ValueError, match="steps"):
        finetune(model, physics, y, steps=-1)
    with pytest.raises(ValueError, match="samples"):
        finetune(model, physics, y, x=x[:2], loss="supervised")
    with pytest.raises(ValueError, match="chunk_size"):
        finetune(model, physics, y, chunk_size=0)


def test_heavy_ball_finetuning_matches_torch_sgd_with_momentum():
    """finetune(optimizer="sgd", momentum=m) takes the steps of torch.optim.SGD(momentum=m) on the same loss."""
    physics, x, y = sr_problem()
    model = MetaPDNet(depth=2, channels=4)
    adapted = finetune(model, physics, y, x=x, steps=5, loss="supervised", lr=0.05, optimizer="sgd", momentum=0.7)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.7)
    for _ in range(5):
        optimizer.zero_grad()
        torch.mean((reference(y, physics) - x) ** 2).backward()
        optimizer.step()
    plain = finetune(model, physics, y, x=x, steps=5, loss="supervised", lr=0.05, optimizer="sgd")
    for a, b, c in zip(adapted.parameters(), reference.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, c) for a, c in zip(adapted.parameters(), plain.parameters()))  # momentum acts
    with pytest.raises(ValueError, match="needs optimizer 'sgd'"):
        finetune(model, physics, y, steps=1, momentum=0.5)  # Adam has its own betas
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        finetune(model, physics, y, steps=1, optimizer="sgd", momentum=1.0)


def test_finetune_takes_the_learned_step_sizes_of_a_meta_training_inner_loop():
    """finetune(inner_loop=trainer.inner) runs the meta-learned per-step learning rates, not a constant one."""
    from deepinv_meta import InnerLoop

    physics, x, y = sr_problem()
    model = MetaPDNet(depth=2, channels=4)
    inner = InnerLoop(steps=3, lr=1e-2, optimizer="sgd", learn_lr=True)
    with torch.no_grad():
        inner.log_lr.copy_(torch.tensor([1e-3, 1e-1, 1e-2]).log())  # as if meta-learned
    adapted = finetune(model, physics, y, x=x, steps=3, loss="supervised", inner_loop=inner)
    reference = copy.deepcopy(model)
    for lr in (1e-3, 1e-1, 1e-2):  # plain gradient descent with those three step sizes
        reference.zero_grad()
        torch.mean((reference(y, physics) - x) ** 2).backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
    for a, b in zip(adapted.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="learned settings exist for 3 steps only"):
        finetune(model, physics, y, steps=4, inner_loop=inner)
    with pytest.raises(ValueError, match="pass one or the other"):
        finetune(model, physics, y, steps=3, lr=0.1, inner_loop=inner)


def test_on_step_sees_every_step_and_ends_at_the_returned_weights():
    physics, x, y = sr_problem()
    seen = []

    def on_step(k, current):
        with torch.no_grad():
            seen.append((k, current(y, physics).clone()))

    adapted = finetune(MetaPDNet(depth=2, channels=4), physics, y, x=x, steps=4, loss="supervised", lr=1e-2,
                       on_step=on_step)
    assert [k for k, _ in seen] == [1, 2, 3, 4]
    assert not torch.equal(seen[0][1], seen[-1][1])
    with torch.no_grad():
        torch.testing.assert_close(seen[-1][1], adapted(y, physics))


def test_equivariant_loss_sees_what_measurement_consistency_cannot():
    """Decimation: the zero-filled A^T y fits y exactly (unsupervised loss 0) but is not shift-equivariant."""
    from deepinv_meta.losses import data_loss
    from deepinv_meta.tasks import decimation

    physics = decimation((1, 16, 16))
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 3, 1, 1)
    y = physics(x)
    zero_filled = lambda y, physics: physics.A_adjoint(y)  # noqa: E731
    x_hat = zero_filled(y, physics)
    assert data_loss("unsupervised", x_hat, y, physics) == 0
    rng = torch.Generator().manual_seed(0)  # an even shift keeps the sampled grid (loss 0): draw several
    draws = [data_loss("equivariant", x_hat, y, physics, model=zero_filled, rng=rng).item() for _ in range(8)]
    assert max(draws) > 1e-3
    with pytest.raises(ValueError, match="needs the reconstructor"):
        data_loss("equivariant", x_hat, y, physics)


def test_equivariant_finetuning_is_reproducible_and_leaves_the_meta_model_alone():
    from deepinv_meta.tasks import decimation

    physics = decimation((1, 16, 16))
    y = physics(torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)))
    model = MetaPDNet(depth=2, channels=4)
    before = copy.deepcopy(model.state_dict())
    runs = [finetune(model, physics, y, steps=3, loss="equivariant", return_losses=True) for _ in range(2)]
    assert runs[0][1] == runs[1][1] and all(math.isfinite(v) for v in runs[0][1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_deepinv_loss_is_the_same_inner_loss_as_its_name():
    """dinv.loss.MCLoss is ||A f(y) - y||^2: fine-tuning with it must give the weights of loss="unsupervised"."""
    physics, x, y = sr_problem()
    model = MetaPDNet(depth=2, channels=4)
    by_name = finetune(model, physics, y, steps=3, lr=1e-2, loss="unsupervised")
    by_object = finetune(model, physics, y, steps=3, lr=1e-2, loss=dinv.loss.MCLoss())
    for a, b in zip(by_name.parameters(), by_object.parameters()):
        torch.testing.assert_close(a, b)
    supervised = finetune(model, physics, y, x=x, steps=3, lr=1e-2, loss=[dinv.loss.SupLoss()])
    assert any(not torch.equal(a, b) for a, b in zip(by_name.parameters(), supervised.parameters()))


def test_equivariant_imaging_with_rotations_through_deepinv_losses():
    """MRI-like operator (shifts only change k-space phases): EI with deepinv's Rotate, as Chen et al. do for MRI."""
    physics = dinv.physics.Inpainting(img_size=(1, 16, 16), mask=0.5)
    y = physics(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    model = MetaPDNet(depth=2, channels=4)
    rotate = dinv.transform.Rotate(multiples=90, rng=torch.Generator().manual_seed(0))
    loss = [dinv.loss.MCLoss(), dinv.loss.EILoss(rotate, apply_noise=False)]
    adapted, losses = finetune(model, physics, y, steps=4, lr=1e-2, loss=loss, return_losses=True)
    plain = finetune(model, physics, y, steps=4, lr=1e-2, loss="unsupervised")
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(adapted.parameters(), plain.parameters()))


def test_sure_drives_finetuning_on_noisy_measurements():
    """deepinv's SURE (no ground truth, known noise level) denoises, where ||A f(y) - y||^2 with A = I cannot."""
    torch.manual_seed(0)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 16, 16), 5, 1, 2)
    y = physics(x)
    model = MetaPDNet(depth=2, channels=4)
    adapted = finetune(model, physics, y, steps=30, lr=1e-2, loss=dinv.loss.SureGaussianLoss(sigma=0.1))
    with torch.no_grad():
        before, after = (torch.mean((m(y, physics) - x) ** 2).item() for m in (model, adapted))
    assert after < 0.5 * before  # (measured 0.0099 -> 0.0028; the "unsupervised" loss gives 0.0102)


def test_bad_deepinv_losses_are_refused_with_the_fix():
    physics, x, y = sr_problem()
    model = MetaPDNet(depth=2, channels=4)
    with pytest.raises(ValueError, match="deepinv.loss.Loss"):
        finetune(model, physics, y, loss=[torch.nn.MSELoss()])
    with pytest.raises(ValueError, match="deepinv.loss.Loss"):
        finetune(model, physics, y, loss=[])
    with pytest.raises(ValueError, match="SupLoss needs ground truth"):
        finetune(model, physics, y, loss=dinv.loss.SupLoss())


def test_the_keywords_of_earlier_versions_build_the_same_inner_loop_with_a_warning():
    import pytest

    from deepinv_meta import InnerLoop, MetaPDNet, MetaTrainer, finetune
    from deepinv_meta.tasks import meta_prior_tasks

    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    y = physics(torch.rand(2, 1, 8, 8))
    model = MetaPDNet(depth=2, channels=4)
    new = finetune(model, physics, y, inner=InnerLoop(steps=3, lr=0.01, optimizer="sgd",
                                                      optimizer_kwargs={"momentum": 0.5}))
    with pytest.warns(DeprecationWarning, match="inner=InnerLoop"):
        old = finetune(model, physics, y, steps=3, lr=0.01, optimizer="sgd", momentum=0.5)
    for a, b in zip(new.parameters(), old.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pass one or the other"):
        finetune(model, physics, y, inner=InnerLoop(steps=1), lr=0.1)
    tasks = meta_prior_tasks(torch.rand(6, 1, 12, 12))
    with pytest.warns(DeprecationWarning):
        trainer = MetaTrainer(model, tasks, inner_steps=2, inner_optimizer="sgd", inner_momentum=0.3, progress=False)
    assert (trainer.inner.steps, trainer.inner.optimizer, trainer.inner.optimizer_kwargs) == (2, "sgd", {"momentum": 0.3})
    with pytest.raises(TypeError, match="unexpected keyword"):
        MetaTrainer(model, tasks, inner_stepz=2)


def test_the_outer_keywords_of_earlier_versions_build_the_same_outer_optimizer():
    import pytest

    from deepinv_meta import MetaPDNet, MetaTrainer, OuterOptimizer
    from deepinv_meta.tasks import meta_prior_tasks

    tasks = meta_prior_tasks(torch.rand(6, 1, 12, 12))
    with pytest.warns(DeprecationWarning, match="outer=OuterOptimizer"):
        old = MetaTrainer(MetaPDNet(depth=2, channels=4), tasks, outer_lr=0.01, grad_clip=1.0, progress=False)
    new = MetaTrainer(MetaPDNet(depth=2, channels=4), tasks, outer=OuterOptimizer(lr=0.01, grad_clip=1.0),
                      progress=False)
    assert old.config == new.config and (old.outer_lr, old.grad_clip) == (new.outer_lr, new.grad_clip) == (0.01, 1.0)
    with pytest.raises(ValueError, match="pass one or the other"):
        MetaTrainer(MetaPDNet(depth=2, channels=4), tasks, outer=OuterOptimizer(), outer_lr=0.1)
    with pytest.raises(ValueError, match="grad_clip"):
        OuterOptimizer(grad_clip=-1.0)


def test_downscaled_pairs_loss_is_the_measurement_against_its_own_downscaled_reconstruction():
    """mean ||f(A_small y) - y||^2 with A_small built for y's size, once per size; gradients reach the model."""
    from deepinv_meta.losses import DownscaledPairsLoss
    from deepinv_meta.physics import decimation

    built = []

    def operator_at(size, device):
        built.append(size)
        return decimation((1, *size), device=device)

    pairs = DownscaledPairsLoss(operator_at, weight=2.0)
    model = MetaPDNet(depth=2, channels=4)
    y = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    value = pairs(y=y, model=model)
    small = decimation((1, 8, 8))
    expected = 2.0 * ((model(y[..., ::2, ::2], small) - y) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    pairs(y=y, model=model)
    pairs(y=torch.rand(1, 1, 6, 6), model=model)
    assert built == [(8, 8), (6, 6)]  # cached per size


@pytest.mark.parametrize("transform", ["scale", "shift*scale"])
def test_scale_equivariant_finetuning_leaves_plain_weights(transform):
    """deepinv's Scale draws its parameters as a tensor subclass which, left in, reached the adapted weights and
    made their next use fail; the weights must stay plain tensors and the adapted model run."""
    from deepinv_meta.losses import equivariant_objective
    from deepinv_meta.physics import decimation

    physics = decimation((1, 16, 16))
    y = physics(torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    objective = equivariant_objective(transform, torch.Generator().manual_seed(0))
    adapted, losses = finetune(MetaPDNet(depth=2, channels=4), physics, y, steps=3, lr=1e-2, loss=objective,
                               batch_size=2, return_losses=True)
    assert all(type(p.data) is torch.Tensor for p in adapted.parameters())
    assert all(math.isfinite(v) for v in losses) and adapted(y, physics).shape == (4, 1, 16, 16)


def test_cosine_schedule_takes_each_step_at_its_own_learning_rate():
    from deepinv_meta.bilevel import InnerLoop

    torch.manual_seed(0)
    model, x = torch.nn.Linear(3, 3), torch.randn(5, 3)
    inner = InnerLoop(steps=3, lr=0.2, optimizer="sgd", schedule="cosine")
    result = inner.run(model, lambda f, k: ((f(x) - x) ** 2).mean(), steps=4, track_meta_grad=False)
    manual = torch.nn.Linear(3, 3)
    manual.load_state_dict(model.state_dict())
    for k in range(4):  # the schedule spans the run's own length (4), not the configured one (3)
        manual.zero_grad()
        ((manual(x) - x) ** 2).mean().backward()
        with torch.no_grad():
            for p in manual.parameters():
                p -= 0.1 * (1 + math.cos(math.pi * k / 4)) * p.grad
    for fast, expected in zip(result.params, manual.parameters()):
        torch.testing.assert_close(fast, expected)
    assert inner.step_lrs() == pytest.approx([0.2, 0.15, 0.05])
    with pytest.raises(ValueError, match="fixed learning rate"):
        InnerLoop(steps=3, schedule="cosine", learn_lr=True)
    with pytest.raises(ValueError, match="'constant' or 'cosine'"):
        InnerLoop(steps=3, schedule="linear")
