"""MetaTrainer: checkpoint/resume, non-finite guards, configuration errors, and a real training run."""

import math
import os
import subprocess
import sys
import time

import deepinv as dinv
import pytest
import torch

from deepinv_meta import MetaPDNet, MetaTrainer, NonFiniteLossError, finetune, load
from deepinv_meta.io import safe_load


from helpers import make_trainer


def test_checkpoint_resume_is_identical_to_an_uninterrupted_run(small_tasks, tmp_path):
    straight = make_trainer(small_tasks)
    straight.train(steps=6)

    first = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt", checkpoint_every=1)
    first.train(steps=3)
    del first  # the "kill": nothing but the checkpoint file survives
    resumed = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt")
    assert resumed.step == 3 and len(resumed.history) == 3
    resumed.train(steps=6)

    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state_a, state_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in state_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state_a[key][name], state_b[key][name], rtol=0, atol=0)
    assert [r["outer_loss"] for r in straight.history] == [r["outer_loss"] for r in resumed.history]


def test_resume_after_killing_the_process(small_tasks, tmp_path):
    """A real SIGKILL in the middle of training: the checkpoint on disk is whole and resumable."""
    script = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from helpers import make_small_tasks, make_trainer
trainer = make_trainer(make_small_tasks(), checkpoint={str(tmp_path / 'run.pt')!r}, checkpoint_every=1)
trainer.train(steps=10_000)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    state = safe_load(tmp_path / "run.pt")
    assert state["step"] >= 1
    resumed = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt")
    assert resumed.step == state["step"]
    resumed.train(steps=resumed.step + 1)
    assert resumed.step == state["step"] + 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_checkpoint_loads_as_a_model(small_tasks, tmp_path):
    trainer = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt")
    trainer.train(steps=1)
    model = load(tmp_path / "run.pt")
    for a, b in zip(model.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(a, b)


def test_resume_with_a_different_configuration_is_refused(small_tasks, tmp_path):
    make_trainer(small_tasks, checkpoint=tmp_path / "run.pt").train(steps=1)
    with pytest.raises(ValueError, match="different configuration"):
        make_trainer(small_tasks, checkpoint=tmp_path / "run.pt", inner_steps=3)


def test_inner_momentum_is_used_stored_and_checked_on_resume(small_tasks, tmp_path):
    trainer = make_trainer(small_tasks, inner_optimizer="sgd", inner_momentum=0.5, checkpoint=tmp_path / "run.pt")
    assert trainer.inner.optimizer_kwargs == {"momentum": 0.5} and trainer.config["inner_momentum"] == 0.5
    trainer.train(steps=1)
    plain = make_trainer(small_tasks, inner_optimizer="sgd")
    plain.train(steps=1)
    assert any(not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), plain.model.parameters()))
    with pytest.raises(ValueError, match="inner_momentum"):
        make_trainer(small_tasks, inner_optimizer="sgd", checkpoint=tmp_path / "run.pt")
    resumed = make_trainer(small_tasks, inner_optimizer="sgd", inner_momentum=0.5, checkpoint=tmp_path / "run.pt")
    assert resumed.step == 1


def test_resume_with_a_different_model_is_refused_with_the_fix(small_tasks, tmp_path):
    make_trainer(small_tasks, checkpoint=tmp_path / "run.pt").train(steps=1)
    with pytest.raises(ValueError, match="Build the same model"):
        MetaTrainer(MetaPDNet(depth=4, channels=6), small_tasks, checkpoint=tmp_path / "run.pt", progress=False,
                    inner_loss="unsupervised", inner_steps=2, batch_size=2, device="cpu")


def test_non_finite_outer_loss_never_updates_the_meta_weights(small_tasks):
    trainer = make_trainer(small_tasks, max_skipped=3)
    poisoned = small_tasks[0]
    poisoned.target = lambda x, y: x * float("nan")  # outer loss of this task becomes NaN
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = trainer.outer_step()
    assert record["skipped"] and "outer loss" in record["error"]
    for a, b in zip(before, trainer.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with pytest.raises(NonFiniteLossError, match="consecutive"):
        trainer.train(steps=10)


def test_non_finite_inner_loss_is_reported(small_tasks):
    trainer = make_trainer(small_tasks, inner_lr=1e30, inner_optimizer="sgd", max_skipped=100)
    record = trainer.outer_step()
    assert record["skipped"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(inner_loss="l1"), "Unknown inner loss"),
        (dict(inner_steps=-1), "inner steps"),
        (dict(inner_optimizer="rmsprop"), "Unknown inner optimizer"),
        (dict(lam=-1.0), "lam"),
        (dict(batch_size=0), "batch_size"),
        (dict(inner_momentum=0.9), "needs optimizer 'sgd'"),
        (dict(inner_optimizer="sgd", inner_momentum=-0.1), "momentum must be in"),
    ],
)
def test_bad_configuration_errors(small_tasks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_trainer(small_tasks, **kwargs)


def test_train_rejects_negative_steps(small_tasks):
    with pytest.raises(ValueError, match="steps"):
        make_trainer(small_tasks).train(steps=-2)


def test_thirty_step_cpu_run_lowers_the_outer_loss():
    """Real meta-training on patches of scikit-image's images; the held-out outer loss must drop.

    A step count, not a time budget: on a machine shared with other jobs (torch's threads oversubscribed) a
    110-second budget made 10 steps once, against 30 steps in 12 s with one other job (measured: loss x 0.14)."""
    from deepinv_meta.data import embedded_images, extract_patches
    from deepinv_meta.tasks import meta_prior_tasks

    torch.manual_seed(0)
    tasks = meta_prior_tasks(extract_patches(embedded_images(), 32), seed=0)
    trainer = MetaTrainer(
        MetaPDNet(depth=8, channels=16), tasks, inner_loss="unsupervised", inner_steps=1, inner_lr=1e-3,
        outer_lr=5e-3, batch_size=4, progress=False, device="cpu",
    )
    before = trainer.evaluate(episodes=3)
    trainer.train(steps=30)
    after = trainer.evaluate(episodes=3)
    mean_before = sum(v["adapted"] for v in before.values()) / len(before)
    mean_after = sum(v["adapted"] for v in after.values()) / len(after)
    print(f"\n{trainer.step} outer steps; held-out outer loss {mean_before:.4e} -> {mean_after:.4e}")
    for name in before:
        print(f"  {name:14s} {before[name]['adapted']:.4e} -> {after[name]['adapted']:.4e}")
    assert trainer.step == 30
    assert mean_after < 0.8 * mean_before


def test_evaluate_with_a_per_image_metric(small_tasks):
    trainer = make_trainer(small_tasks)
    scores = trainer.evaluate(episodes=2, metric=dinv.loss.metric.PSNR())
    for task in small_tasks:
        entry = scores[task.name]
        assert set(entry) == {"meta", "adapted", "meta_std", "adapted_std"}
        assert 0 < entry["meta"] < 100 and entry["meta_std"] >= 0


def test_checkpoints_from_before_learned_lr_modes_resume(small_tasks, tmp_path):
    """Older checkpoints stored learn_inner_lr=True (now 'per_step') and no outer_loss (L2)."""
    from deepinv_meta.io import atomic_save, safe_load

    path = tmp_path / "old.pt"
    trainer = make_trainer(small_tasks, learn_inner_lr=True, checkpoint=path)
    trainer.train(steps=1)
    state = safe_load(path)
    state["config"]["learn_inner_lr"] = True
    del state["config"]["outer_loss"]
    atomic_save(state, path)
    assert make_trainer(small_tasks, learn_inner_lr=True, checkpoint=path).step == 1


@pytest.fixture
def one_second_per_clock_read(monkeypatch):
    """train_for's clock reads 1 s more at each call: minutes=0.15 with validate_every=0.001 gives 4 validations
    however loaded the machine is."""
    from deepinv_meta.benchmarks import report

    class Clock:
        now = 0.0

        @classmethod
        def perf_counter(cls):
            cls.now += 1.0
            return cls.now

    monkeypatch.setattr(report, "time", Clock)


def test_train_for_keeps_the_weights_with_the_lowest_held_out_loss(small_tasks, one_second_per_clock_read):
    """A late blow-up of the held-out loss (or a NaN) must not replace the best weights seen."""
    from deepinv_meta.benchmarks import report

    trainer = make_trainer(small_tasks)
    snapshots = []

    def fake_evaluate():  # 2nd validation is the best, later ones are worse or NaN
        snapshots.append((trainer.step, {k: v.clone() for k, v in trainer.model.state_dict().items()}))
        loss = [0.5, 0.2, float("nan")][len(snapshots) - 1] if len(snapshots) <= 3 else 1.0 + len(snapshots)
        return {"denoising": {"adapted": loss}}

    trainer.evaluate = fake_evaluate
    report.train_for(trainer, minutes=0.15, name="test", validate_every=0.001)
    assert len(trainer.validation) == 4 and trainer.step > snapshots[1][0]
    assert trainer.selected_step == snapshots[1][0]
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][1][name], rtol=0, atol=0)
    trainer.outer_step()  # training on from the restored weights: the model holds the newest step again
    assert trainer.selected_step == trainer.step


def test_restore_best_needs_a_finite_validation_loss(small_tasks):
    trainer = make_trainer(small_tasks)
    trainer.evaluate = lambda: {"denoising": {"adapted": float("nan")}}
    assert math.isnan(trainer.validate()) and [v["step"] for v in trainer.validation] == [0]
    with pytest.raises(NonFiniteLossError, match="no finite validation loss"):
        trainer.restore_best()


def test_rollback_returns_to_the_best_weights_and_adam_state_and_halves_the_outer_lr(small_tasks, tmp_path,
                                                                                      one_second_per_clock_read):
    """train_for(rollback_above=3): a held-out loss > 3x the best one sends training back to the best step."""
    import copy

    from deepinv_meta.benchmarks import report

    trainer = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt")
    snapshots = []

    def fake_evaluate():  # the 3rd validation is a blow-up (5.0 > 3 x 0.2), the 4th is fine again
        snapshots.append((trainer.step, copy.deepcopy(trainer.model.state_dict()),
                          copy.deepcopy(trainer.optimizer.state_dict()["state"])))
        return {"denoising": {"adapted": [0.5, 0.2, 5.0, 0.25][len(snapshots) - 1]}}

    rolled_back_to = {}
    rollback = trainer.rollback

    def spy():
        step = rollback()
        rolled_back_to.update(model=copy.deepcopy(trainer.model.state_dict()),
                              adam=copy.deepcopy(trainer.optimizer.state_dict()["state"]))
        return step

    trainer.evaluate, trainer.rollback = fake_evaluate, spy
    report.train_for(trainer, minutes=0.15, name="test", validate_every=0.001, rollback_above=3.0)
    assert len(snapshots) == 4
    assert trainer.rollbacks == [{"step": snapshots[2][0], "to_step": snapshots[1][0], "lr_factor": 0.5}]
    for name, value in rolled_back_to["model"].items():
        torch.testing.assert_close(value, snapshots[1][1][name], rtol=0, atol=0)
    for key, moments in snapshots[1][2].items():
        torch.testing.assert_close(rolled_back_to["adam"][key]["exp_avg"], moments["exp_avg"], rtol=0, atol=0)
    trainer.outer_step()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.5 * trainer.outer_lr * g["lr_scale"]
                                                                  for g in trainer.optimizer.param_groups]
    trainer.save()
    resumed = make_trainer(small_tasks, checkpoint=tmp_path / "run.pt")
    assert resumed.lr_factor == 0.5 and resumed.rollbacks == trainer.rollbacks
    with pytest.raises(ValueError, match="lr_factor"):
        rollback(lr_factor=0)


def test_validation_between_outer_steps_does_not_change_the_training_run(small_tasks):
    """validate() at any points (time-based in the benchmarks) leaves the trained weights bit-identical, even
    for a model that draws from the global random state (as dropout does)."""
    from deepinv_meta import MetaPDNet

    class NoisyPDNet(MetaPDNet):
        def forward(self, y, physics, **kwargs):
            out = super().forward(y, physics, **kwargs)
            return out + 1e-3 * torch.randn_like(out)

    def run(validate_after):
        torch.manual_seed(0)
        trainer = MetaTrainer(NoisyPDNet(depth=3, channels=6), small_tasks, inner_steps=2, batch_size=2,
                              progress=False, device="cpu")
        for k in range(1, 4):
            trainer.train(steps=k)
            if k in validate_after:
                trainer.validate()
        return [p.detach().clone() for p in trainer.model.parameters()]

    for a, b in zip(run(()), run((1, 2))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_implicit_meta_gradients_train_a_metapdnet_and_resume(small_tasks, tmp_path):
    trainer = make_trainer(small_tasks, inner_steps=5, lam=1.0, implicit=True, cg_steps=3, checkpoint=tmp_path / "run.pt")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.train(steps=2)
    assert not any(r["skipped"] for r in history) and all(math.isfinite(r["outer_loss"]) for r in history)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    assert make_trainer(small_tasks, inner_steps=5, lam=1.0, implicit=True, cg_steps=3, checkpoint=tmp_path / "run.pt").step == 2
    with pytest.raises(ValueError, match="different configuration"):
        make_trainer(small_tasks, inner_steps=5, lam=1.0, checkpoint=tmp_path / "run.pt")  # MAML now


def test_two_processes_train_exactly_like_one(small_tasks, tmp_path):
    """torch.distributed (gloo, 2 CPU processes): tasks split over ranks, meta-gradients summed."""
    from helpers import spawn_training

    ranks = spawn_training(tmp_path, steps=3)
    torch.manual_seed(100)  # rank 0's initialisation, trained in one process
    single = MetaTrainer(MetaPDNet(depth=3, channels=6), small_tasks, inner_loss="unsupervised", inner_steps=2,
                         batch_size=2, progress=False, device="cpu")
    single.train(steps=3)
    for name, expected in single.model.state_dict().items():
        for result in ranks:
            torch.testing.assert_close(result["state"][name], expected, rtol=1e-5, atol=1e-7)
    for record, expected in zip(ranks[1]["history"], single.history):
        assert record["tasks"].keys() == expected["tasks"].keys()
        assert record["outer_loss"] == pytest.approx(expected["outer_loss"], rel=1e-5)
    assert load(tmp_path / "run.pt") is not None  # rank 0's checkpoint
    assert sorted(p.name for p in tmp_path.glob("run.pt*")) == ["run.pt"]  # no torn or duplicate files


def test_a_non_finite_loss_in_one_process_skips_the_step_in_all(tmp_path):
    from helpers import spawn_training

    results = spawn_training(tmp_path, steps=1, poison_task=1)
    torch.manual_seed(100)
    initial = MetaPDNet(depth=3, channels=6).state_dict()
    for result in results:  # task 1 (NaN) ran on rank 1 only; both skipped and kept rank 0's initial weights
        assert result["history"][0]["skipped"]
        for name, value in initial.items():
            assert torch.equal(result["state"][name], value)


def test_meta_training_with_a_deepinv_loss_matches_its_name(small_tasks):
    """inner_loss=dinv.loss.MCLoss() is the "unsupervised" inner loss; its label goes into the configuration."""
    by_name, by_object = make_trainer(small_tasks), make_trainer(small_tasks, inner_loss=dinv.loss.MCLoss())
    by_name.train(steps=2)
    by_object.train(steps=2)
    for a, b in zip(by_name.model.parameters(), by_object.model.parameters()):
        torch.testing.assert_close(a, b)
    assert by_object.config["inner_loss"] == "MCLoss"


def test_supervised_trainer_is_the_meta_trainer_without_inner_loop_and_resumes_its_checkpoints(tmp_path):
    import deepinv as dinv

    from deepinv_meta import InnerLoop, SupervisedTrainer, Task
    from deepinv_meta.models import MetaDIP

    torch.manual_seed(0)
    images = torch.rand(6, 1, 16, 16)
    task = Task("denoising", dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)), images[:4], images[4:])

    def model():
        torch.manual_seed(1)
        return MetaDIP((1, 16, 16), steps=2, train_steps=2, channels=(4, 8))

    plain = MetaTrainer(model(), [task], inner=InnerLoop(steps=0), batch_size=2, progress=False,
                        checkpoint=tmp_path / "plain.pt")
    plain.train(steps=2)
    supervised = SupervisedTrainer(model(), [task], batch_size=2, progress=False)
    supervised.train(steps=2)
    for a, b in zip(plain.model.parameters(), supervised.model.parameters()):
        assert torch.equal(a, b)
    resumed = SupervisedTrainer(model(), [task], batch_size=2, progress=False, checkpoint=tmp_path / "plain.pt")
    assert resumed.step == 2
    resumed.train(steps=3)
    plain.train(steps=3)
    for a, b in zip(plain.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_supervised_trainer_refuses_inner_loop_settings(small_tasks):
    from deepinv_meta import InnerLoop, SupervisedTrainer

    for settings in (dict(inner=InnerLoop(steps=1)), dict(inner_loss="unsupervised"), dict(lam=0.1)):
        with pytest.raises(TypeError, match="no inner loop"):
            SupervisedTrainer(MetaPDNet(depth=2, channels=4), small_tasks, **settings)


def test_metapdnet_steps_run_on_native_convolutions_with_the_same_result(small_tasks, monkeypatch):
    """oneDNN off inside the outer step and fine-tuning (MetaPDNet prefers the native kernels), restored after;
    the same meta-gradient as with oneDNN, to rounding (not the weights: Adam's first step is the sign of each
    gradient entry, which rounding can flip where an entry is near 0)."""
    seen = []
    forward = MetaPDNet.forward

    def recording(self, *args, **kwargs):
        seen.append(torch.backends.mkldnn.enabled)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MetaPDNet, "forward", recording)
    native = make_trainer(small_tasks)
    native.train(steps=1)
    assert seen and not any(seen) and torch.backends.mkldnn.enabled == torch.backends.mkldnn.is_available()
    monkeypatch.setattr(MetaPDNet, "prefers_native_convolutions", False)
    seen.clear()
    onednn = make_trainer(small_tasks)
    onednn.train(steps=1)
    assert all(seen) == torch.backends.mkldnn.is_available()
    for a, b in zip(native.model.parameters(), onednn.model.parameters()):
        assert (a.grad - b.grad).abs().max() <= 1e-4 * a.grad.abs().max()
    monkeypatch.setattr(MetaPDNet, "prefers_native_convolutions", True)
    seen.clear()
    episode = small_tasks[2].episode(2, seed=0)
    finetune(native.model, episode.physics, episode.y_train, steps=1)
    assert seen and not any(seen)
