r"""Training campaigns: long meta-training runs, accumulated across sessions, that feed the zoo.

``deepinv-meta campaign NAME --minutes M`` resumes every run of campaign ``NAME`` from
``campaigns/NAME/`` (a :class:`~deepinv_meta.MetaTrainer` checkpoint per run), trains M more minutes
in chunks of at most ``chunk_minutes`` (5 by default, so a killed run loses at most that much), and
after each chunk:

1. validates the adapted model on held-out images (keep-best; a loss above ``rollback_above`` times
   the best one is a blow-up, rolled back with half the outer learning rate; ``PLATEAU_CHUNKS`` chunks in a
   row without a new best restart from the best weights of all sessions, the zoo's copy, with half the outer
   learning rate and a fresh Adam state),
2. writes the trainer checkpoint atomically (the next run continues bit-exactly),
3. appends a line to ``log.csv``, redraws ``curve.png`` and rewrites ``STATUS.md`` (total CPU and GPU
   minutes, steps, best validation, size on disk),
4. exports the weights to the zoo (:mod:`deepinv_meta.pretrained`) when the validation improved on
   the best of all sessions.

The runs of a campaign (and the campaigns of ``all``) share the time by their ``share``: the next chunk
goes to the run furthest behind its share of this session's minutes.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import deepinv as dinv
import torch

from .bilevel import InnerLoop, MetaTrainer, OuterOptimizer, SupervisedTrainer
from .figures import save_figure
from .io import FileLock, atomic_write_json, remove_stale_temporaries
from .tasks import Task

ROLLBACK_ABOVE = 3.0  # a held-out loss above this multiple of the best one is a blow-up
PLATEAU_CHUNKS = 4  # validations in a row without a new best before a restart from the best weights at half the lr


@dataclass
class Run:
    """One trainer of a campaign, feeding one zoo entry.

    :param str zoo_name: the zoo entry it exports to (and the stem of its files).
    :param Callable build: ``build(data_root, device) -> Setup``.
    :param float share: its weight when several runs share a session's minutes.
    """

    zoo_name: str
    build: Callable
    share: float = 1.0


@dataclass
class Setup:
    """What a run's ``build`` returns: the trainer (not yet resumed), held-out tasks and provenance."""

    trainer_args: dict
    model: torch.nn.Module
    tasks: list
    validation_tasks: list | None
    provenance: dict
    warm_start: Path | None = None
    external: dict = field(default_factory=dict)  # weights not exported (see deepinv_meta.pretrained.export)
    prepare_export: Callable | None = None  # the zoo's copy of the model, e.g. with the data normalisation set
    trainer: type = MetaTrainer  # or SupervisedTrainer, for models whose forward pass is the whole solver


# ------------------------------------------------------------------------------------------ the runs
SUPERVISED_MRI_NOTE = ("Fine-tune it before use on MRI: unadapted, it was below zero-filling on MRI x4 (30.32 vs "
                       "30.75 dB at 4065 outer steps; docs/benchmarks.rst).")


def _meta_prior(inner_loss: str) -> Callable:
    def build(root: Path, device) -> Setup:
        from .data import load_image_folder
        from .models import MetaPDNet
        from .tasks import meta_prior_tasks

        bsd400 = load_image_folder(root / "images" / "bsd400")
        bsd68 = load_image_folder(root / "images" / "bsd68", limit=20)
        tasks = meta_prior_tasks(bsd400, bsd68, patch_size=48, seed=0)
        return Setup(
            trainer_args=dict(inner=InnerLoop(steps=1, lr=1e-3), outer=OuterOptimizer(lr=1e-3), inner_loss=inner_loss,
                              batch_size=8),
            model=MetaPDNet(depth=20, channels=40), tasks=tasks, validation_tasks=None,
            provenance={"training_data": "BSD400 (48x48 patches); validation: 20 BSD68 images",
                        "tasks": [t.name for t in tasks], "inner_loss": inner_loss,
                        "validation": "MSE after one inner step, fixed BSD68 episodes of the four tasks",
                        **({"notes": SUPERVISED_MRI_NOTE} if inner_loss == "supervised" else {})})
    return build


def _metadip(root: Path, device) -> Setup:
    from .benchmarks.metadip import FULL, load_data
    from .benchmarks.settings import configure
    from .models import MetaDIP

    cfg = configure(FULL, {"img_size": 64, "test_faces": 8})
    data = load_data(root, cfg, device)
    noise = dinv.physics.GaussianNoise(25 / 255)
    half = len(data["train"]) // 2
    task = Task("denoising sigma=25", dinv.physics.Denoising(noise), data["train"][:half], data["train"][half:])
    held_out = Task("held-out faces, sigma=25", dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255)),
                    data["faces"], data["faces"])
    model = MetaDIP((3, 64, 64), steps=50, train_steps=20, lr=1.0, momentum=0.9, tv_weight=1e-3,
                    channels=(16, 32, 64), latent_channels=8, fourier_features=16, seed=0)
    return Setup(
        trainer=SupervisedTrainer,
        trainer_args=dict(outer=OuterOptimizer(lr=1e-3, lr_scales={"inner.": 10.0}, grad_clip=1.0), batch_size=2),
        model=model, tasks=[task], validation_tasks=[held_out],
        provenance={"training_data": f"{len(data['train'])} CelebA faces, 64x64 RGB; validation: 8 held-out faces",
                    "tasks": [task.name], "validation": "MSE after 50 inner steps on held-out faces"})


def _meta_red(root: Path, device) -> Setup:
    from .benchmarks.meta_red import FULL, deconvolution_physics, load_faces, split
    from .benchmarks.settings import configure
    from .models import MetaRED
    from .weights import load_denoiser

    cfg = configure(FULL, {"test_faces": 8})
    x_train, x_test = split(load_faces(root, device), 64, cfg)
    task = Task("deconvolution", deconvolution_physics(cfg, device), x_train, x_train)
    held_out = Task("held-out faces, deconvolution", deconvolution_physics(cfg, device), x_test, x_test)
    denoiser_file = "weights/kair_dncnn/dncnn_25.pth"
    # gamma: the RED weight tuned by the committed meta-red benchmark for 12 RED iterations (grid [0.5, 2, 8])
    model = MetaRED((1, 64, 64), load_denoiser(root / denoiser_file, device=device), red_iterations=3, steps=3,
                    sigma=25 / 255, gamma=8.0, lr=cfg["red_inner_lr"], hidden=256, layers=5)
    external = {"solver.prior.denoiser.": {
        "description": "the KAIR DnCNN weights (grey, sigma 25/255, MIT licence)", "data_file": denoiser_file,
        "origin": "https://github.com/cszn/KAIR (model_zoo/dncnn_25.pth)"}}
    return Setup(
        trainer=SupervisedTrainer,
        trainer_args=dict(outer=OuterOptimizer(lr=cfg["red_outer_lr"], grad_clip=1.0), outer_loss="l2", batch_size=3),
        model=model, tasks=[task], validation_tasks=[held_out], external=external,
        provenance={"training_data": f"{len(x_train)} CelebA faces, 64x64 grey; validation: 8 held-out faces",
                    "tasks": ["deconvolution (Gaussian blur sigma 1, noise 0.015)"],
                    "validation": "MSE of Meta-RED (3 SIREN updates x 3 RED iterations) on held-out faces"})


def _variational(root: Path, device) -> Setup:
    from .benchmarks.settings import configure
    from .benchmarks.variational import FULL, mnist_experiment
    from .losses import VariationalLoss
    from .models.variational import LSTMSolver, TwoScaleCNN, VariationalCost, VariationalReconstructor

    cfg = configure(FULL, {})
    exp = mnist_experiment(root, cfg, device, seed=0)
    cnn = TwoScaleCNN(1, cfg["cnn_hidden"], kernel_size=cfg["cnn_kernel"], scale=cfg["cnn_scale"])
    model = VariationalReconstructor(VariationalCost(cnn, learn_weights=True), LSTMSolver(1, cfg["lstm_hidden"]))
    model.solver.iterations = cfg["iterations"][1]  # the last phase of the paper's 5 -> 20 schedule
    held_out = Task("held-out digits", exp.physics, exp.x_test[:256], exp.x_test[:256], generator=exp.generator)
    offset, scale = exp.normalisation
    return Setup(
        trainer=SupervisedTrainer,
        trainer_args=dict(outer_loss=VariationalLoss(cnn, (1.0, 0.05, 0.05)),
                          outer=OuterOptimizer(lr=cfg["lr"], lr_scales={"cost.prior.": 0.5},
                                               grad_clip=cfg["grad_clip"]["MNIST"]),
                          batch_size=cfg["batch_size"]),
        model=model, tasks=[exp.task], validation_tasks=[held_out],
        prepare_export=lambda trained: with_normalisation(trained, offset, scale),
        warm_start=Path(__file__).resolve().parent.parent / "benchmarks/results/variational/mnist_50min/mnist_2scnn_lstm.pt",
        provenance={"training_data": f"{len(exp.x_train)} MNIST digits (standardised), 3 holes of 9x9 + noise",
                    "tasks": ["MNIST inpainting"], "normalisation": {"offset": offset, "scale": scale},
                    "validation": "MSE on 256 held-out digits (standardised intensities)"})


def with_normalisation(model, offset: float, scale: float):
    """A copy of a variational model trained on data ``(x - offset) / scale`` that takes and returns images in
    their own intensities (:class:`~deepinv_meta.models.variational.VariationalReconstructor`)."""
    import copy

    exported = copy.deepcopy(model)
    exported.normalisation = (float(offset), float(scale))
    return exported


CAMPAIGNS = {
    # shares: the demo's model (supervised, still improving) first; unsupervised is near its plateau at ~1800 steps
    "meta-prior": [Run("meta-prior-unsupervised", _meta_prior("unsupervised"), 0.2),
                   Run("meta-prior-supervised", _meta_prior("supervised"), 0.35)],
    "metadip": [Run("metadip", _metadip, 0.15)],
    "meta-red": [Run("meta-red-deblur", _meta_red, 0.2)],
    "variational": [Run("variational-mnist", _variational, 0.1)],
}


# ------------------------------------------------------------------------------------------ the loop
class ActiveRun:
    """A run being trained in this session: its trainer, files and accumulated state."""

    def __init__(self, campaign: str, run: Run, folder: Path, data_root: Path, device, threads: int, zoo=None):
        self.campaign, self.run, self.folder, self.zoo = campaign, run, folder, zoo
        self.device, self.threads = torch.device(device), threads
        self.checkpoint = folder / f"{run.zoo_name}.trainer.pt"
        self.state_file = folder / f"{run.zoo_name}.json"
        remove_stale_temporaries(self.state_file)  # a killed writer's leftovers (the trainer cleans its checkpoint's)
        self.state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {
            "cpu_minutes": 0.0, "gpu_minutes": 0.0, "best_loss": None, "best_step": None, "exports": 0}
        setup = run.build(data_root, self.device)
        self.setup = setup
        if setup.warm_start is not None and not self.checkpoint.is_file() and setup.warm_start.is_file():
            from .io import load
            setup.model.load_state_dict(load(setup.warm_start).state_dict())
            self.state["warm_start"] = str(setup.warm_start.relative_to(Path(__file__).resolve().parent.parent))
        self.trainer = setup.trainer(setup.model, setup.tasks, device=self.device, seed=0, checkpoint=self.checkpoint,
                                     progress=False, **setup.trainer_args)
        self.session_minutes = 0.0

    def chunk(self, minutes: float) -> dict:
        """Train ``minutes``, validate, checkpoint; returns the log record."""
        start, step0 = time.perf_counter(), self.trainer.step
        self.trainer.train(steps=10**9, max_time=60 * minutes)  # checkpoints at its end
        trained = (time.perf_counter() - start) / 60
        loss = self.trainer.validate(ROLLBACK_ABOVE, tasks=self.setup.validation_tasks)
        rolled_back = bool(self.trainer.rollbacks) and self.trainer.rollbacks[-1]["step"] == self.trainer.step
        improved = math.isfinite(loss) and (self.state["best_loss"] is None or loss < self.state["best_loss"])
        since_best = 0 if improved or rolled_back else self.state.get("chunks_since_best", 0) + 1
        if since_best >= PLATEAU_CHUNKS:  # a plateau: back to the best weights, smaller outer steps from there
            self.restart_from_best()
            since_best = 0
        self.state["chunks_since_best"] = since_best
        self.trainer.save()
        elapsed = (time.perf_counter() - start) / 60
        self.session_minutes += elapsed
        self.state["gpu_minutes" if self.device.type == "cuda" else "cpu_minutes"] += elapsed
        record = {"time_utc": _now(), "run": self.run.zoo_name, "step": self.trainer.step,
                  "cpu_minutes": round(self.state["cpu_minutes"], 2), "gpu_minutes": round(self.state["gpu_minutes"], 2),
                  "device": self.device.type, "threads": self.threads, "val_loss": loss,
                  "val_psnr": round(-10 * math.log10(loss), 3) if loss > 0 else float("nan"),
                  "s_per_step": round(60 * trained / max(self.trainer.step - step0, 1), 3),
                  "lr_factor": self.trainer.lr_factor, "rolled_back": rolled_back, "exported": improved}
        if improved:
            self.state.update(best_loss=loss, best_step=self.trainer.step, exports=self.state["exports"] + 1)
            self.export(loss)
        self.state["steps"] = self.trainer.step
        self.state["last_update"] = record["time_utc"]
        atomic_write_json(self.state, self.state_file)
        return record

    def restart_from_best(self) -> None:
        """The weights of the best validation of all sessions (the zoo's copy of them), a fresh Adam state (its
        moments belong to the weights left behind) and half the outer learning rate."""
        from . import pretrained
        from .io import safe_load

        try:
            path = pretrained.weights_path(self.run.zoo_name, **({"zoo": self.zoo} if self.zoo is not None else {}))
        except (ValueError, FileNotFoundError):
            path = None  # nothing exported yet: only slow down
        if path is not None:
            weights = safe_load(path)["state_dict"]
            missing, unexpected = self.trainer.model.load_state_dict(weights, strict=False)
            if unexpected or [k for k in missing if not k.startswith(tuple(self.setup.external))]:
                raise RuntimeError(f"{path} does not fit the trainer's model of {self.run.zoo_name}.")
            self.trainer.optimizer.state.clear()
        self.trainer.lr_factor *= 0.5

    def export(self, loss: float) -> None:
        from . import pretrained

        metadata = dict(self.setup.provenance, outer_steps=self.trainer.step,
                        cpu_minutes=round(self.state["cpu_minutes"], 1), gpu_minutes=round(self.state["gpu_minutes"], 1),
                        device=self.device.type, validation_loss=loss,
                        validation_psnr=round(-10 * math.log10(loss), 2) if loss > 0 else None,
                        date=_now(), commit=_commit(), campaign=self.campaign)
        model = self.trainer.model
        if self.setup.prepare_export is not None:
            model = self.setup.prepare_export(model)
        pretrained.export(model, self.run.zoo_name, metadata=metadata, external=self.setup.external,
                          **({"zoo": self.zoo} if self.zoo is not None else {}))


def run_campaign(name: str, minutes: float, *, threads: int = 1, device="cpu", folder="campaigns",
                 data_root=None, chunk_minutes: float = 5.0, zoo=None, log=print) -> list[dict]:
    """Train campaign ``name`` (or ``"all"``) for ``minutes`` more minutes; see the module docstring.

    :param str zoo: the zoo folder to export to (default: the package's own, :mod:`deepinv_meta.pretrained`).

    :return: the log records written in this call.
    """
    from .data import data_root as find_data_root

    if name != "all" and name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r}; use one of {sorted(CAMPAIGNS)} or 'all'.")
    if not minutes > 0 or not chunk_minutes > 0:
        raise ValueError(f"minutes and chunk_minutes must be > 0, got {minutes!r}, {chunk_minutes!r}.")
    torch.set_num_threads(threads)
    root = find_data_root(data_root)
    names = sorted(CAMPAIGNS) if name == "all" else [name]
    records = []
    with contextlib.ExitStack() as held:  # every folder locked, and each lock released even if a later one fails
        for n in names:
            held.enter_context(FileLock(Path(folder) / n / "campaign"))
        active = []
        for n in names:
            for run in CAMPAIGNS[n]:
                log(f"[{n}] {run.zoo_name}: loading data and resuming")
                active.append(ActiveRun(n, run, Path(folder) / n, root, device, threads, zoo))
        start = time.perf_counter()
        while (left := minutes - (time.perf_counter() - start) / 60) > 1 / 120:  # half a second
            current = min(active, key=lambda a: a.session_minutes / a.run.share)
            record = current.chunk(min(chunk_minutes, left))
            records.append(record)
            log(f"[{current.campaign}] {record['run']}: step {record['step']}, held-out loss {record['val_loss']:.4e} "
                f"(PSNR {record['val_psnr']:.2f} dB), {record['s_per_step']} s/step"
                + (", rolled back" if record["rolled_back"] else "") + (", exported to the zoo" if record["exported"] else ""))
            write_reports(Path(folder) / current.campaign, [a for a in active if a.campaign == current.campaign], record)
    return records


# ------------------------------------------------------------------------------------------ reports
LOG_FIELDS = ["time_utc", "run", "step", "cpu_minutes", "gpu_minutes", "device", "threads", "val_loss", "val_psnr",
              "s_per_step", "lr_factor", "rolled_back", "exported"]


def write_reports(folder: Path, runs: list[ActiveRun], record: dict) -> None:
    """Append ``record`` to ``log.csv``, redraw ``curve.png``, rewrite ``STATUS.md``."""
    log_file = folder / "log.csv"
    new = not log_file.is_file()
    with open(log_file, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(record)
    with open(log_file, newline="") as f:
        rows = list(csv.DictReader(f))
    plot_curve(rows, folder / "curve.png", folder.name)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20
    lines = [f"# Campaign `{folder.name}`", "",
             f"Resume with `deepinv-meta campaign {folder.name} --minutes M` (`--device cuda` on a GPU). "
             f"Last update {record['time_utc']}; this folder holds {size:.1f} MB.", "",
             "| zoo model | outer steps | CPU minutes | GPU minutes | best held-out loss (PSNR) | at step | "
             "last held-out loss | s / step | outer lr factor | chunks since best |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        last = [r for r in rows if r["run"] == run.run.zoo_name]
        state = run.state
        best = state["best_loss"]
        best_text = f"{best:.4e} ({-10 * math.log10(best):.2f} dB)" if best else "-"
        last_text = f"{float(last[-1]['val_loss']):.4e}" if last else "-"
        lines.append(f"| `{run.run.zoo_name}` | {run.trainer.step} | {state['cpu_minutes']:.1f} | {state['gpu_minutes']:.1f} "
                     f"| {best_text} | {state['best_step']} | {last_text} | {last[-1]['s_per_step'] if last else '-'} "
                     f"| {run.trainer.lr_factor:g} | {state.get('chunks_since_best', 0)} of {PLATEAU_CHUNKS} |")
    lines += ["", "Validation: " + "; ".join(f"`{r.run.zoo_name}`: {r.setup.provenance['validation']}" for r in runs)
              + ". PSNR here is -10 log10 of the mean held-out MSE.",
              "", "Warm starts: " + (", ".join(f"`{r.run.zoo_name}` from `{r.state['warm_start']}`" for r in runs
                                               if r.state.get("warm_start")) or "none") + ".",
              "", "![validation curve](curve.png)", ""]
    (folder / "STATUS.md").write_text("\n".join(lines))


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    """Held-out PSNR against training hours (CPU and GPU together), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in sorted({r["run"] for r in rows}):
        mine = [r for r in rows if r["run"] == run]
        hours = [(float(r["cpu_minutes"]) + float(r["gpu_minutes"])) / 60 for r in mine]
        ax.plot(hours, [float(r["val_psnr"]) for r in mine], marker=".", label=run)
    ax.set_xlabel("training hours (CPU + GPU)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"campaign {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
