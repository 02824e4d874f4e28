"""Bad input through the Python API: integrity of saved files, values refused at construction,
concurrent trainers, and a trainer killed while writing its checkpoint."""

import os
import subprocess
import sys
import zipfile

import pytest
import torch

from deepinv_meta import MetaPDNet, MetaTrainer, load, save
from helpers import LockHeldByAnotherProcess


def flip_a_weight_byte(path):
    """Flip one byte inside the first weight tensor of a torch zip file (the archive stays readable)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 16)
    data = bytearray(path.read_bytes())
    name_length, extra_length = (int.from_bytes(data[info.header_offset + k: info.header_offset + k + 2], "little")
                                 for k in (26, 28))  # the local header's own lengths (torch pads with an extra field)
    start = info.header_offset + 30 + name_length + extra_length
    data[start + 5] ^= 0x7F
    path.write_bytes(bytes(data))


def test_flipped_weight_bytes_are_detected(tmp_path):
    path = save(MetaPDNet(depth=2, channels=4), tmp_path / "m.pt")
    flip_a_weight_byte(path)
    with pytest.raises(ValueError, match="do not match the checksum"):
        load(path)


def test_metadata_that_cannot_be_loaded_back_is_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match="metadata\\['when'\\] is a datetime"):
        import datetime
        save(MetaPDNet(depth=2, channels=4), tmp_path / "m.pt", when=datetime.datetime.now())
    assert not (tmp_path / "m.pt").exists()
    save(MetaPDNet(depth=2, channels=4), tmp_path / "m.pt", steps=3, losses=[0.1, 0.2], note={"a": None})
    assert load(tmp_path / "m.pt", return_metadata=True)[1]["losses"] == [0.1, 0.2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(grad_clip=0.0), "grad_clip"), (dict(grad_clip=-1.0), "grad_clip"),
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(max_skipped=0), "max_skipped"),
    (dict(outer_lr=float("nan")), "outer_lr"),
])
def test_trainer_values_that_would_train_wrongly_are_refused(small_tasks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaTrainer(MetaPDNet(depth=2, channels=4), small_tasks, progress=False, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(tau=-0.5), dict(gamma=0.0), dict(init_std=float("nan"))])
def test_model_values_that_would_run_wrongly_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MetaPDNet(depth=2, channels=4, **kwargs)


def test_a_second_trainer_on_the_same_checkpoint_is_refused(small_tasks, tmp_path):
    checkpoint = tmp_path / "run.pt"
    with LockHeldByAnotherProcess(tmp_path / "run.pt.lock") as pid:  # as a live trainer holds it
        trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), small_tasks, batch_size=2, progress=False,
                              checkpoint=checkpoint)
        with pytest.raises(RuntimeError, match=f"held by process {pid}"):
            trainer.train(steps=1)
        assert not checkpoint.exists()
    with pytest.warns(UserWarning, match="stale lock"):
        trainer.train(steps=1)
    assert checkpoint.is_file() and not (tmp_path / "run.pt.lock").exists()


def test_a_trainer_killed_while_writing_its_checkpoint_resumes_and_leaves_nothing(tmp_path):
    """Fault injection: the second checkpoint write stalls half-way; the process is killed there."""
    script = f"""
import sys, time, torch
sys.path.insert(0, {os.path.dirname(__file__)!r})
import deepinv_meta.io as io
from helpers import make_small_tasks, make_trainer
real_save, writes = torch.save, []
def stalling_save(obj, f):
    writes.append(1)
    if len(writes) == 2:
        f.write(b"PK\\x03\\x04half a checkpoint")
        f.flush()
        print("STALLED", flush=True)
        time.sleep(120)
    real_save(obj, f)
io.torch.save = stalling_save
trainer = make_trainer(make_small_tasks(), checkpoint={str(tmp_path / 'run.pt')!r}, checkpoint_every=1)
trainer.train(steps=5)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "STALLED"
    proc.kill()
    proc.wait()
    leftovers = list(tmp_path.glob("*.tmp"))
    assert leftovers and (tmp_path / "run.pt.lock").exists()  # what a kill mid-write leaves
    from helpers import make_small_tasks, make_trainer

    resumed = make_trainer(make_small_tasks(), checkpoint=tmp_path / "run.pt")
    assert resumed.step == 1  # the first, complete checkpoint
    with pytest.warns(UserWarning, match="stale lock"):
        resumed.train(steps=2)
    assert resumed.step == 2 and not list(tmp_path.glob("*.tmp")) and not (tmp_path / "run.pt.lock").exists()



def test_misleading_failures_get_messages_that_name_the_cause():
    import deepinv as dinv

    from deepinv_meta import finetune

    model = MetaPDNet(depth=2, channels=4)
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.5)
    y = physics(torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="y is torch.float64 but the model's weights are torch.float32"):
        model(y.double(), physics)
    with pytest.raises(ValueError, match="batch of size 0"):
        finetune(model, physics, y[:0], steps=1)
    with pytest.raises(ValueError, match="batch of size 0"):
        model(y[:0], physics)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="use torch.no_grad|under torch.no_grad"):
        finetune(model, physics, y, steps=1)
    with torch.no_grad():  # what dinv.test does: works
        assert finetune(model, physics, y, steps=1)(y, physics).shape == (2, 1, 8, 8)


def test_a_resume_on_other_training_data_is_refused(tmp_path):
    from deepinv_meta.tasks import meta_prior_tasks

    images = torch.rand(8, 1, 16, 16)
    trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), meta_prior_tasks(images), batch_size=2, progress=False,
                          checkpoint=tmp_path / "run.pt")
    trainer.train(steps=1)
    same = MetaTrainer(MetaPDNet(depth=2, channels=4), meta_prior_tasks(images.clone()), batch_size=2,
                       progress=False, checkpoint=tmp_path / "run.pt")
    assert same.step == 1
    with pytest.raises(ValueError, match="other task data"):
        MetaTrainer(MetaPDNet(depth=2, channels=4), meta_prior_tasks(torch.rand(8, 1, 16, 16)), batch_size=2,
                    progress=False, checkpoint=tmp_path / "run.pt")


def test_a_huge_outer_learning_rate_does_not_leave_a_model_with_non_finite_output(small_tasks):
    from deepinv_meta import NonFiniteLossError

    trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), small_tasks, outer_lr=1e12, batch_size=2, progress=False,
                          max_skipped=3)
    with pytest.raises(NonFiniteLossError, match="restored to those before outer step 1"):
        trainer.train(steps=20)
    episode = small_tasks[0].episode(2, seed=5)
    with torch.no_grad():
        assert torch.isfinite(trainer.model(episode.y_test, episode.physics)).all()


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
])
def test_a_full_disk_is_named_and_the_previous_file_kept(tmp_path, monkeypatch, failure):
    import deepinv_meta.io as io

    path = save(MetaPDNet(depth=2, channels=4), tmp_path / "m.pt")
    before = path.read_bytes()

    def full(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise failure
    monkeypatch.setattr(io.torch, "save", full)
    with pytest.raises(OSError, match="no space left on its disk"):
        save(MetaPDNet(depth=2, channels=4), path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))
