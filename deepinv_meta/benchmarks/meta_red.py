r"""Meta-RED / MetaSIREN benchmark (Zhao, Tables 1-4) at CPU scale.

``deepinv-meta benchmark meta-red [--quick]``. Protocol (grey CelebA faces: centre 64×64 crop of the
aligned 89×109 images, area-resized for smaller runs; the first ``train_faces`` train, the last
``test_faces`` test):

- **Table 1**, inpainting with the centre third (1/9 of the area) zeroed, gradient-descent solver
  (one step of size 0.9 on the data term): MetaSIREN with m = 2, 3, 5, 7 inner steps and one learned
  learning rate per step, against a UNet trained supervised on :math:`A^\top y` for the same time.
- **Table 2**, random missing pixels on 32×32 faces (Bernoulli masks with ``observed`` pixels on
  average), SIREN alone, 5 inner steps with Meta-SGD (one learning rate per weight and step),
  against the same supervised UNet.
- **Table 3**, deconvolution (Gaussian blur of standard deviation ``blur_sigma`` pixels, noise 1.5 %)
  with RED fixed-point iterations and the KAIR DnCNN (σ = 25/255, grey, ``weights/kair_dncnn``) as
  the classical solver: Meta-RED (3 SIREN updates × 3 RED iterations = 12 solver iterations; L1 and
  L2 outer losses) against RED and HQS with the same denoiser for 12 iterations and to convergence
  (``converged_iterations``), their step (γ) tuned on training faces; two reference rows: RED for the
  3 iterations that end Meta-RED, from :math:`A^\top y` and from the ground truth (an oracle start).
- **Table 4**: the same with the denoiser trained: Meta-RED with the DnCNN fine-tuned during
  meta-training, and RED / HQS unrolled for 12 iterations with the DnCNN trained end to end (L2);
  every DnCNN trains at the Adam rate ``denoiser_lr``.
- Every model trains for ``train_minutes``; with ``validate_every`` the weights with the lowest MSE on
  fixed training episodes, the untrained ones included, are reported.
- Metrics: MSE, PSNR, SSIM (``deepinv.loss.metric``). LPIPS is not reported: its network weights
  are downloaded at first use and none are available offline.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import deepinv as dinv
import torch

from .. import baselines
from ..bilevel import OuterOptimizer, SupervisedTrainer
from ..data import center_crop, load_image_folder
from ..models import GradientDescent, MetaRED, MetaSIREN, REDFixedPoint
from ..tasks import Task
from ..weights import load_denoiser
from .report import Context, log, markdown_table, train_for

# `--set "tables=['3']"` reruns some tables only (Table 4 still tunes the RED step of Table 3's RED (12 it.))
# `red_inner_lr`: Meta-RED's initial per-weight inner rates. Its inner loss ||A f(phi) - y||^2 barely depends on
# the SIREN image once f ends with 3 strongly data-fitting RED iterations (gradient ~1e-6), so at 1e-2 the SIREN
# does not move; 100 is the best of 1e-2 / 100 / 300 / 1000 / 3000 measured (see docs/benchmarks.rst)
# `red_outer_lr`: Adam rate of Meta-RED's SIREN weights and learned inner rates (its denoiser, in Table 4, trains at
# `denoiser_lr` like the unrolled RED / HQS); with inner rates of 100 the SIREN image is sensitive to its weights
# `validate_every` (minutes): keep the weights, the starting ones included, with the lowest MSE on fixed training
# episodes, so that training never reports a model worse than its start (None: keep the last weights)
TABLES = ("1", "2", "3", "4")

FULL = dict(
    img_size=64, pixels_size=32, train_faces=2500, test_faces=50, siren_hidden=256, siren_layers=5,
    inner_lr=1e-2, outer_lr=1e-4, batch_size=3, train_minutes=4.0, meta_steps=[2, 3, 5, 7],
    observed=[10, 500, 1000, 512], blur_sigma=1.0, noise=0.015, red_sigma=25 / 255,
    # the best RED weight and HQS step of the grids [0.5, 2, 8] were both 8, at the edge (the committed full
    # run before these grids): 3 RED iterations gave 29.28 dB at 8 and 29.83 at 16
    red_gamma=[2.0, 4.0, 8.0, 16.0, 32.0, 64.0], hqs_stepsize=[2.0, 8.0, 32.0, 128.0, 512.0], converged_iterations=100,
    tune_faces=4, unet_scales=3, denoiser="weights/kair_dncnn/dncnn_25.pth", tables=list(TABLES), red_inner_lr=100.0,
    red_outer_lr=1e-5, denoiser_lr=1e-4, validate_every=1.0,
    # True adds a Table-3 row: Meta-RED (L2) with one RED weight gamma_k per RED iteration meta-learned at
    # Adam lr `gamma_lr` (on log gamma_k), from the tuned gamma; not in the paper
    red_learned_gamma=False, gamma_lr=1e-2,
)
QUICK = dict(
    FULL, img_size=32, train_faces=300, test_faces=6, siren_hidden=64, siren_layers=3, outer_lr=1e-3,
    train_minutes=0.3, meta_steps=[2, 5], observed=[500], red_gamma=[2.0], hqs_stepsize=[2.0],
    converged_iterations=40, tune_faces=2, unet_scales=2, validate_every=0.1,
)


def load_faces(root: Path, device) -> torch.Tensor:
    """All CelebA faces as grey centre 64×64 crops ``(N, 1, 64, 64)``."""
    return torch.stack([center_crop(f, 64) for f in load_image_folder(root / "images" / "celeba", grey=True)]).to(device)


def split(faces: torch.Tensor, size: int, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test faces at ``size`` (area-resized), disjoint: the first and the last ones."""
    if size != faces.shape[-1]:
        faces = torch.nn.functional.interpolate(faces, size=(size, size), mode="area")
    return faces[: cfg["train_faces"]], faces[-cfg["test_faces"]:]


class Scorer:
    """MSE, PSNR and SSIM of a reconstructor on fixed test measurements (one seed per image)."""

    def __init__(self, physics, x_test, generator=None, seed: int = 10**6):
        self.physics, self.x = physics, x_test
        self.masks = generator.step(batch_size=len(x_test), seed=seed)["mask"] if generator is not None else None
        noise = physics.noise_model
        if getattr(noise, "rng", None) is not None:
            noise.rng.manual_seed(seed)
        self.y = [self._measure(i) for i in range(len(x_test))]
        self.psnr, self.ssim = dinv.loss.metric.PSNR(), dinv.loss.metric.SSIM()

    def _select(self, i: int) -> None:
        if self.masks is not None:
            self.physics.update(mask=self.masks[i: i + 1])

    def _measure(self, i: int) -> torch.Tensor:
        self._select(i)
        with torch.no_grad():
            return self.physics(self.x[i: i + 1])

    def __call__(self, model, oracle: bool = False) -> dict:
        """Scores of ``model(y, physics)`` (``model(y, physics, x)`` when ``oracle``: a bound, not a method)."""
        values = {"mse": [], "psnr": [], "ssim": []}
        seconds = 0.0
        model.eval()
        for i, y in enumerate(self.y):
            self._select(i)
            x = self.x[i: i + 1]
            start = time.perf_counter()
            with torch.no_grad():
                x_hat = (model(y, self.physics, x) if oracle else model(y, self.physics)).clamp(0, 1)
            seconds += time.perf_counter() - start
            values["mse"].append(torch.mean((x_hat - x) ** 2).item())
            values["psnr"].append(self.psnr(x_hat, x).item())
            values["ssim"].append(self.ssim(x_hat, x).item())
        out = {k: float(torch.tensor(v).mean()) for k, v in values.items()}
        out["psnr_std"] = float(torch.tensor(values["psnr"]).std()) if len(self.y) > 1 else 0.0
        out["time_s"] = seconds / len(self.y)
        return out


class FromTruth(torch.nn.Module):
    """Run a solver ``solver(x0, y, physics)`` from the ground truth :math:`x_0 = x` (an oracle start)."""

    def __init__(self, solver: torch.nn.Module):
        super().__init__()
        self.solver = solver

    def forward(self, y, physics, x):
        return self.solver(x, y, physics)


def train(model, task: Task, cfg: dict, device, seed: int, name: str, outer_loss="l2", lr=None, lr_scales=None):
    """Supervised training of ``model(y, physics)`` (for test-time optimisers: meta-training) for ``train_minutes``.

    With ``validate_every`` the weights with the lowest MSE on fixed training episodes are kept, the
    untrained ones included (measured once before training)."""
    outer = OuterOptimizer(lr=lr or cfg["outer_lr"], lr_scales=lr_scales, grad_clip=1.0)
    trainer = SupervisedTrainer(model, [task], outer=outer, outer_loss=outer_loss, batch_size=cfg["batch_size"],
                                device=device, seed=seed, progress=False)
    if cfg["validate_every"]:
        trainer.validate()
    seconds = train_for(trainer, cfg["train_minutes"], name, validate_every=cfg["validate_every"])
    info = {"train_steps": trainer.step, "train_time_s": seconds}
    if cfg["validate_every"]:
        info["selected_step"] = trainer.selected_step
    return info


def unet(cfg: dict) -> baselines.BackProjectionNet:
    return baselines.BackProjectionNet(dinv.models.UNet(1, 1, scales=cfg["unet_scales"], batch_norm=False))


def row(table: str, task: str, method: str, scores: dict, **extra) -> dict:
    record = {"table": table, "task": task, "method": method, **scores, **extra}
    log(f"  {table} {task:24s} {method:34s} PSNR {scores['psnr']:6.2f} ± {scores['psnr_std']:.2f}  "
        f"SSIM {scores['ssim']:.3f}  MSE {scores['mse']:.2e}")
    return record


def table1(faces, cfg, device, seed) -> list[dict]:
    x_train, x_test = faces
    size = cfg["img_size"]
    mask = torch.ones(1, size, size, device=device)
    third = size // 3
    mask[:, third: size - third, third: size - third] = 0
    physics = dinv.physics.Inpainting((1, size, size), mask=mask, device=device)
    task = Task("centre inpainting", physics, x_train, x_train)
    score = Scorer(physics, x_test)
    rows = []
    for m in cfg["meta_steps"]:
        model = MetaSIREN((1, size, size), solver=GradientDescent(1, 0.9), steps=m, lr=cfg["inner_lr"], learn_lr=True,
                          hidden=cfg["siren_hidden"], layers=cfg["siren_layers"])
        info = train(model, task, cfg, device, seed, f"Meta-{m} (centre inpainting)")
        rows.append(row("1", "centre inpainting", f"Meta-{m}", score(model), **info))
    net = unet(cfg)
    info = train(net, task, cfg, device, seed, "UNet (centre inpainting)", lr=1e-3)
    rows.append(row("1", "centre inpainting", "UNet (supervised)", score(net), **info))
    return rows


def table2(faces, cfg, device, seed) -> list[dict]:
    x_train, x_test = faces
    size = cfg["pixels_size"]
    rows = []
    for observed in cfg["observed"]:
        ratio = observed / size**2
        generator = dinv.physics.generator.BernoulliSplittingMaskGenerator((1, size, size), split_ratio=ratio,
                                                                           device=device)
        physics = dinv.physics.Inpainting((1, size, size), mask=torch.ones(1, size, size), device=device)
        # one mask per episode: a test-time optimiser fits each image with the batch's single operator
        task = Task(f"{observed} pixels", physics, x_train, x_train, generator=generator, per_sample_operators=False)
        score = Scorer(physics, x_test, generator)
        name = f"{observed} observed pixels"
        model = MetaSIREN((1, size, size), solver=None, steps=5, lr=cfg["inner_lr"], learn_lr="per_parameter",
                          hidden=cfg["siren_hidden"], layers=cfg["siren_layers"])
        info = train(model, task, cfg, device, seed, f"MetaSIREN, Meta-SGD ({name})")
        rows.append(row("2", name, "MetaSIREN (Meta-SGD, 5 steps)", score(model), **info))
        net = unet(cfg)
        info = train(net, task, cfg, device, seed, f"UNet ({name})", lr=1e-3)
        rows.append(row("2", name, "UNet (supervised)", score(net), **info))
    return rows


def tuned(build, grid, score_tune, name: str = "") -> tuple:
    """The grid value whose reconstructor has the best PSNR on the tuning faces (says so when it is at an edge)."""
    results = {value: score_tune(build(value))["psnr"] for value in grid}
    best = max(results, key=results.get)
    if baselines.grid_edges({"value": best}, {"value": grid}):
        log(f"  WARNING {name}: best value {best} at the edge of the grid {grid}: may be under-tuned")
    return best, results


def deconvolution_physics(cfg: dict, device):
    kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(cfg["blur_sigma"],) * 2)
    noise = dinv.physics.GaussianNoise(cfg["noise"], rng=torch.Generator(device))
    return dinv.physics.BlurFFT((1, cfg["img_size"], cfg["img_size"]), filter=kernel, noise_model=noise, device=device)


def tables3and4(faces, denoiser, cfg, device, seed) -> list[dict]:
    x_train, x_test = faces
    size, sigma, task_name = cfg["img_size"], cfg["red_sigma"], "deconvolution"
    physics = deconvolution_physics(cfg, device)
    task = Task(task_name, physics, x_train, x_train)
    score, score_tune = Scorer(physics, x_test), Scorer(physics, x_train[: cfg["tune_faces"]], seed=7)
    rows, gammas, wanted = [], {}, set(cfg["tables"])

    # Table 3 baselines: RED and HQS with the fixed denoiser, their step tuned on training faces
    for iterations, label in ((12, "12 it."), (cfg["converged_iterations"], f"convergence, {cfg['converged_iterations']} it.")):
        gamma, grid = tuned(lambda g: baselines.FromAdjoint(REDFixedPoint(denoiser, iterations, gamma=g, sigma=sigma)),
                            cfg["red_gamma"], score_tune, f"RED ({label}) gamma")
        gammas[iterations] = gamma
        if "3" not in wanted:
            break  # Table 4 only needs the 12-iteration RED step
        red = baselines.FromAdjoint(REDFixedPoint(denoiser, iterations, gamma=gamma, sigma=sigma))
        rows.append(row("3", task_name, f"RED ({label})", score(red), gamma=gamma, grid=grid))
        step, grid = tuned(lambda s: baselines.hqs(denoiser, sigma, iterations, stepsize=s), cfg["hqs_stepsize"],
                           score_tune, f"HQS ({label}) stepsize")
        hqs = baselines.hqs(denoiser, sigma, iterations, stepsize=step)
        rows.append(row("3", task_name, f"HQS ({label})", score(hqs), stepsize=step, grid=grid))
    gamma = gammas[12]  # Meta-RED and the unrolled solvers use the best 12-iteration RED weight
    if "3" in wanted:
        # Meta-RED's output is 3 RED iterations from the adapted SIREN image: what 3 iterations give from
        # A^T y, and from the ground truth itself (an oracle start: a reference for what a learned start can give)
        red3 = REDFixedPoint(denoiser, 3, gamma=gamma, sigma=sigma)
        rows.append(row("3", task_name, "RED (3 it.)", score(baselines.FromAdjoint(red3)), gamma=gamma))
        rows.append(row("3", task_name, "RED (3 it. from the ground truth, oracle)", score(FromTruth(red3), oracle=True),
                        gamma=gamma))

    def meta_red(train_denoiser, learn_gamma=False):
        return MetaRED((1, size, size), copy.deepcopy(denoiser), red_iterations=3, steps=3, sigma=sigma, gamma=gamma,
                       train_denoiser=train_denoiser, lr=cfg["red_inner_lr"], hidden=cfg["siren_hidden"],
                       layers=cfg["siren_layers"], learn_gamma=learn_gamma)

    for loss in ("l1", "l2") if "3" in wanted else ():
        model = meta_red(False)
        info = train(model, task, cfg, device, seed, f"Meta-RED ({loss.upper()}, fixed DnCNN)", outer_loss=loss,
                     lr=cfg["red_outer_lr"])
        rows.append(row("3", task_name, f"Meta-RED ({loss.upper()}, 3x3 = 12 it.)", score(model), gamma=gamma, **info))
    if "3" in wanted and cfg["red_learned_gamma"]:
        model = meta_red(False, learn_gamma=True)
        info = train(model, task, cfg, device, seed, "Meta-RED (L2, learned gamma)", lr=cfg["red_outer_lr"],
                     lr_scales={"solver.log_gamma": cfg["gamma_lr"] / cfg["red_outer_lr"]})
        learned = [round(g.item(), 4) for g in model.solver.gammas()]
        rows.append(row("3", task_name, "Meta-RED (L2, learned γ per RED it., 3x3 = 12 it.)", score(model),
                        gamma=gamma, learned_gammas=learned, **info))
        log(f"  learned RED weights {learned} (start {gamma})")

    if "4" not in wanted:
        return rows
    # Table 4: the denoiser trained with the solver
    model = meta_red(True)
    info = train(model, task, cfg, device, seed, "Meta-RED (L2, fine-tuned DnCNN)", lr=cfg["red_outer_lr"],
                 lr_scales={"solver.prior.denoiser.": cfg["denoiser_lr"] / cfg["red_outer_lr"]})
    rows.append(row("4", task_name, "Meta-RED (L2, fine-tuned DnCNN)", score(model), **info))
    red = baselines.FromAdjoint(REDFixedPoint(copy.deepcopy(denoiser), 12, gamma=gamma, sigma=sigma, train_denoiser=True))
    info = train(red, task, cfg, device, seed, "RED unrolled 12 it. (trained DnCNN)", lr=cfg["denoiser_lr"])
    rows.append(row("4", task_name, "RED unrolled (12 it., trained DnCNN)", score(red), **info))
    trainable = copy.deepcopy(denoiser).requires_grad_(True)
    hqs = baselines.hqs(trainable, sigma, 12, stepsize=gammas[12], unfold=True)
    info = train(hqs, task, cfg, device, seed, "HQS unrolled 12 it. (trained DnCNN)", lr=cfg["denoiser_lr"])
    rows.append(row("4", task_name, "HQS unrolled (12 it., trained DnCNN)", score(hqs), **info))
    return rows


def run(cfg: dict, context: Context) -> dict:
    """Run the tables of ``cfg["tables"]``; returns the results dict (written to ``context.out`` too)."""
    tables = cfg["tables"] if isinstance(cfg["tables"], (list, tuple)) else [cfg["tables"]]
    cfg["tables"] = [str(table) for table in tables]  # `tables=3`, `tables=[3]` as well as `tables=['3']`
    unknown = set(cfg["tables"]) - set(TABLES)
    if unknown or not cfg["tables"]:
        raise ValueError(f"the `tables` setting must name some of the tables {list(TABLES)}, got {cfg['tables']}.")
    device, seed, root = context.torch_device(), context.seed, context.root()
    torch.manual_seed(seed)
    context.begin("Meta-RED / MetaSIREN benchmark", cfg)
    denoiser = load_denoiser(root / cfg["denoiser"], device=device).eval()
    denoiser.requires_grad_(False)
    everything = load_faces(root, device)
    faces, small = split(everything, cfg["img_size"], cfg), split(everything, cfg["pixels_size"], cfg)
    log(f"{len(faces[0])} training / {len(faces[1])} test faces (grey), denoiser {cfg['denoiser']}")
    rows = []
    if "1" in cfg["tables"]:
        rows += table1(faces, cfg, device, seed)
    if "2" in cfg["tables"]:
        rows += table2(small, cfg, device, seed)
    if {"3", "4"} & set(cfg["tables"]):
        rows += tables3and4(faces, denoiser, cfg, device, seed)
    config = dict(cfg, data_root=str(root),
                  lpips="not reported: LPIPS weights are downloaded at first use, none available offline")
    result = context.result("meta-red", config, rows)
    return context.finish(result, format_table(result))


def format_table(result: dict) -> str:
    parts = []
    titles = {"1": "Table 1 — centre inpainting", "2": "Table 2 — random missing pixels (32×32)",
              "3": "Table 3 — deconvolution, fixed DnCNN", "4": "Table 4 — deconvolution, trained DnCNN"}
    for table, title in titles.items():
        rows = [r for r in result["rows"] if r["table"] == table]
        if not rows:
            continue
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        cell = lambda r: "—" if r is None else f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['mse']:.2e}"  # noqa: E731
        parts.append(f"{title} (PSNR dB / SSIM / MSE)\n\n" + markdown_table(rows, tasks, methods, cell))
    return "\n".join(parts)
