"""Small, fast problems shared by the tests (importable from subprocesses too)."""

import torch


def make_small_tasks():
    """The four Meta-Prior tasks on smooth random 16x16 images (fast on CPU)."""
    from deepinv_meta.tasks import meta_prior_tasks

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.avg_pool2d(torch.rand(24, 1, 32, 32, generator=g), 3, 1, 1)
    return meta_prior_tasks(images[:, :, :16, :16], images[:6, :, 16:, 16:], blur_psf_size=5)


def make_trainer(tasks, **kwargs):
    """A small MetaPDNet trainer with a fixed initialisation."""
    from deepinv_meta import MetaPDNet, MetaTrainer

    torch.manual_seed(0)
    defaults = dict(inner_loss="unsupervised", inner_steps=2, inner_lr=1e-3, batch_size=2, progress=False, device="cpu")
    defaults.update(kwargs)
    return MetaTrainer(MetaPDNet(depth=3, channels=6), tasks, **defaults)


def distributed_training_worker(rank, world_size, init_file, out_dir, steps, poison_task=None):
    """One process of a ``world_size``-process meta-training run (gloo, CPU); rank ``r`` writes its weights.

    ``poison_task``: index of a task whose outer loss is NaN (it runs on rank ``index % world_size`` only).
    """
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(100 + rank)  # different local initialisations: rank 0's must be broadcast
        from deepinv_meta import MetaPDNet, MetaTrainer

        tasks = make_small_tasks()
        if poison_task is not None:
            tasks[poison_task].target = lambda x, y: x * float("nan")
        trainer = MetaTrainer(MetaPDNet(depth=3, channels=6), tasks, inner_loss="unsupervised",
                              inner_steps=2, batch_size=2, progress=False, device="cpu",
                              checkpoint=f"{out_dir}/run.pt", checkpoint_every=1)
        trainer.train(steps=steps)
        torch.save({"state": trainer.model.state_dict(), "history": trainer.history}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no collective still in flight on the peer when the group goes
    finally:
        dist.destroy_process_group()


def spawn_training(tmp_path, steps, poison_task=None, world_size=2):
    """Run :func:`distributed_training_worker` in ``world_size`` processes; return each rank's saved result.

    Gloo can abort a process while it is torn down (a C++ thread still joinable at interpreter exit, seen once in
    CI with ``terminate called without an active exception``, pytorch/pytorch#179291 discusses the race). A crash
    *after* every rank has saved its result and passed the final barrier does not touch what the tests check, so
    it is reported as a warning; a crash before that fails the test.
    """
    import warnings

    import torch.multiprocessing as mp

    args = (world_size, str(tmp_path / "init"), str(tmp_path), steps, poison_task)
    try:
        mp.spawn(distributed_training_worker, args=args, nprocs=world_size, join=True)
    except mp.ProcessExitedException as crash:
        if crash.signal_name is None or not all((tmp_path / f"rank{r}.pt").exists() for r in range(world_size)):
            raise
        warnings.warn(f"a worker crashed at teardown after saving its result: {crash}")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def quick_benchmark(name, out, *options):
    """``deepinv-meta benchmark NAME --quick`` on the CPU into ``out``; returns its results.json, checked for the
    contract's fields."""
    import json

    from deepinv_meta.cli import main

    assert main(["benchmark", name, "--quick", "--device", "cpu", "--out", str(out), *options]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["benchmark"] == name and result["quick"] is True and result["wall_time_s"] > 0
    assert (out / "table.md").read_text().startswith(f"Command: `deepinv-meta benchmark {name}")
    return result


class LockHeldByAnotherProcess:
    """``with LockHeldByAnotherProcess(lock_file) as pid:`` writes the pid of a live process into ``lock_file`` (as
    a running trainer or campaign holds it); at the exit the process is killed, so the lock turns stale."""

    def __init__(self, lock_file):
        self.lock_file = lock_file

    def __enter__(self) -> int:
        import subprocess
        import sys

        self.holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        self.lock_file.write_text(str(self.holder.pid))
        return self.holder.pid

    def __exit__(self, *exc) -> None:
        self.holder.kill()
        self.holder.wait()


def flip_a_byte(path) -> None:
    """Damage a file in place: its middle byte inverted (what a hash check must catch)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
