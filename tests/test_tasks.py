"""Tasks: the four Meta-Prior tasks, reproducible episodes, new operators per batch."""

import pytest
import torch

from deepinv_meta.tasks import Task, meta_prior_tasks


def test_meta_prior_tasks_builds_the_four_tasks(small_tasks):
    assert [t.name for t in small_tasks] == ["denoising", "tv_estimation", "deblurring", "inpainting"]
    for task in small_tasks:
        episode = task.episode(batch_size=3, seed=0)
        assert episode.x_train.shape == episode.target_train.shape == (3, 1, 16, 16)
        assert episode.y_test.shape == (3, 1, 16, 16)


def test_episodes_are_reproducible_and_draw_new_operators(small_tasks):
    for task in small_tasks:
        a = task.episode(2, seed=1)
        task.episode(2, seed=2)  # hidden state (warm starts, RNG streams) must not leak into seed 1
        b = task.episode(2, seed=1)
        c = task.episode(2, seed=3)
        for field in ("x_train", "y_train", "target_train", "y_test", "target_test"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (task.name, field)
        assert not torch.equal(c.y_train, a.y_train), task.name  # another seed, another episode
        if task.name == "tv_estimation":
            # the target is prox_TV(y), not x
            assert (a.target_train - a.x_train).abs().max() > 1e-3
        else:
            # new operator / noise per episode: same images would still give other measurements
            c_y = task.physics(a.x_train)
            assert not torch.allclose(c_y, a.y_train), task.name


def test_test_split_is_held_out():
    images = torch.rand(10, 1, 8, 8)
    tasks = meta_prior_tasks(images, test_fraction=0.3)
    train, test = tasks[0].train_data, tasks[0].test_data
    assert len(train) == 7 and len(test) == 3
    assert not any(torch.equal(t, s) for t in train for s in test)


def test_patches_are_cut_from_images_of_any_size():
    tasks = meta_prior_tasks([torch.rand(1, 40, 50), torch.rand(1, 33, 70)], patch_size=16)
    assert tasks[0].train_data.shape[1:] == (1, 16, 16)


def test_bad_task_inputs():
    import deepinv as dinv

    with pytest.raises(TypeError, match="deepinv.physics.Physics"):
        Task("t", lambda x: x, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Task("t", dinv.physics.Denoising(), torch.rand(2, 4, 4), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="same"):
        Task("t", dinv.physics.Denoising(), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="NaN"):
        Task("t", dinv.physics.Denoising(), torch.full((2, 1, 4, 4), float("nan")), torch.rand(2, 1, 4, 4))


def test_fourier_sampling_task_draws_one_cartesian_mask_per_episode_and_meta_trains(small_tasks):
    from deepinv_meta import MetaPDNet, MetaTrainer
    from deepinv_meta.tasks import fourier_sampling_task

    task = fourier_sampling_task(small_tasks[0].train_data, small_tasks[0].test_data, acceleration=4,
                                 center_fraction=0.125)
    masks = []
    for seed in (0, 1, 0):
        episode = task.episode(3, seed=seed)
        assert episode.x_train.shape == (3, 2, 16, 16) and episode.x_train[:, 1].abs().max() == 0
        masks.append(task.physics.mask.clone())
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])
    mask = masks[0][0, 0]
    assert torch.equal(mask, mask[:1].expand_as(mask))  # Cartesian: whole k-space lines
    assert mask.mean().item() == pytest.approx(0.25, abs=0.07) and mask[:, 7:9].eq(1).all()  # sampled centre (2 of 16 lines)
    # a fifth task beside the four real-image ones: MetaPDNet's channel-wise filters take both layouts
    trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), small_tasks + [task], batch_size=2, progress=False,
                          device="cpu")
    record = trainer.outer_step()
    assert not record["skipped"] and "fourier_sampling" in record["tasks"]
