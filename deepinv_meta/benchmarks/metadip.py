r"""MetaDIP benchmark (MetaDIP paper, Tables 1-3 and Figure 2) at CPU scale.

``deepinv-meta benchmark metadip [--quick]``. Protocol:

- MetaDIP and MetaSIREN are meta-trained on one task only, Gaussian denoising at :math:`\sigma = 25`
  of CelebA faces (centre crops, RGB), with 20 inner steps (second order through all of them; MetaDIP's
  learned step sizes and momenta get a 10x larger outer learning rate, ``lr_scales``), and
  evaluated with 50 inner steps on unseen problems and images: denoising at :math:`\sigma = 15, 25`,
  compressed sensing (``dinv.physics.CompressedSensing``, :math:`m/n = 1/4, 1/8`) and compressive
  phase retrieval (``dinv.physics.RandomPhaseRetrieval``, :math:`m/n = 1/4, 1/8` as in the paper's
  Table 3: m complex Gaussian measurements for n pixels, one matrix applied to each colour channel),
  on held-out faces and on CBSD68 patches.
  Compressed-sensing and phase-retrieval measurements get Gaussian noise of standard deviation
  ``measurement_noise``.
- Baselines: BM3D (denoising; deepinv's wrapper, needs the ``bm3d`` package), PnP-ADMM with the
  IPOL FFDNet colour weights tuned by a grid (strength x penalty x iterations) on two training faces per
  problem, vanilla DIP with 50 and 1000 iterations (random init, latent jitter, EMA of the outputs).
- Every PSNR and time per image is measured in the same run on the same device.
- Time-to-PSNR speed-up (denoising :math:`\sigma = 25`, faces): wall time DIP needs to reach
  MetaDIP(50)'s PSNR on an image, divided by MetaDIP(50)'s time on it (median over images; when DIP
  never reaches it the ratio is a lower bound and is marked so).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import deepinv as dinv
import torch

from .. import baselines
from ..bilevel import NonFiniteLossError, OuterOptimizer, SupervisedTrainer
from ..data import load_image_folder
from ..figures import save_figure
from ..io import save
from ..models import MetaDIP, MetaSIREN
from ..physics import to_physics_input
from ..tasks import Task
from ..weights import load_denoiser
from .report import Context, log, markdown_table, train_for
from .settings import per_model

# The full run is 32x32 on a CPU (speed-up >= 18.4x). At 64x64 an outer lr of 1e-4 (1e-3 blew up at step 130 in
# one trial) plateaus near a held-out loss of 6e-3 within 20 minutes: a time-to-PSNR speed-up of 2.8x (committed
# under benchmarks/results/metadip/64px/; reproduce with --set img_size=64 --set "outer_lr={'MetaDIP': 1e-4,
# 'MetaSIREN': 1e-3}" --set rollback_above=None); 1e-3 with rollback gave 3.8x (64px_outer_lr_1e-3/). At 32x32
# the outer lr 1e-3 can blow up after a few hundred steps, so the held-out loss is measured every
# `validate_every` minutes on training faces, a loss above `rollback_above` x the best one sends training back to
# the best weights with half the outer lr (MetaTrainer.rollback; without it, a blow-up at step 153 of a 20-minute
# run left a dead network for the remaining 15 minutes), and the weights with the lowest held-out loss are kept
# (report.train_for).
# Channels (32, 64, 128) at 64x64 were unstable with the inner lr of 1 (20 outer steps took the held-out PSNR
# after 50 inner steps from 13.4 to 7.2 dB; (16, 32, 64): 13.6 -> 20.3 dB after 40 steps). MetaSIREN's held-out
# loss is flat after about 10 minutes.

# the rows; `--set methods=['PnP-ADMM']` reruns some of them only (meta-training is skipped when neither
# meta-model is asked for, the speed-up and convergence figure when MetaDIP is not)
METHODS = ("BM3D", "PnP-ADMM", "DIP", "MetaSIREN", "MetaDIP")
FULL = dict(
    img_size=32, channels=(16, 32, 64), latent_channels=8, fourier_features=16, train_steps=20, test_steps=50,
    inner_lr=1.0, momentum=0.9, tv_weight=1e-3, siren_hidden=128, siren_layers=4, siren_lr=1e-2,
    outer_lr=1e-3, lr_scales={"inner.": 10.0}, batch_size=2,
    train_minutes={"MetaDIP": 20.0, "MetaSIREN": 10.0},
    validate_every=1.0, rollback_above=3.0, train_faces=2500, test_faces=4, test_patches=4,
    sigmas=[15, 25], cs_ratios=[1 / 4, 1 / 8], pr_ratios=[1 / 4, 1 / 8], measurement_noise=10 / 255,
    dip_iterations=[50, 1000], dip_lr=1e-2,
    # PnP grids widened after the committed run, where gamma 2 and 40 iterations (the top edges) were often best;
    # a rerun of those rows on gamma [1 ... 16] and [10 ... 80] iterations still chose 80 (docs/benchmarks.rst)
    pnp_sigma=[0.05, 0.1, 0.2], pnp_gamma=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0], pnp_iterations=[10, 20, 40, 80, 160],
    denoiser="weights/ipol_ffdnet/net_rgb.pth", curve_steps=300, methods=list(METHODS),
)
QUICK = dict(
    FULL, siren_hidden=64, siren_layers=3, train_minutes=1.5, validate_every=0.5, train_faces=500,
    test_faces=2, test_patches=2, cs_ratios=[1 / 4], pr_ratios=[1 / 4], dip_iterations=[50, 300],
    pnp_sigma=[0.05, 0.1], pnp_gamma=[1.0], pnp_iterations=[10], curve_steps=100,
)


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top: top + size, left: left + size]


def load_data(root: Path, cfg: dict, device) -> dict:
    """Faces (train / held-out test, disjoint) and natural patches, all RGB ``img_size`` squares."""
    size = cfg["img_size"]
    crop = 64  # the face in the 89x109 aligned CelebA crops; resized for smaller runs
    faces = load_image_folder(root / "images" / "celeba", grey=False)
    faces = torch.stack([centre_crop(f, crop) for f in faces])
    if size != crop:
        faces = torch.nn.functional.interpolate(faces, size=(size, size), mode="area")
    patches = torch.stack([centre_crop(im, size) for im in load_image_folder(root / "images" / "cbsd68", grey=False)])
    return {
        "train": faces[: cfg["train_faces"]].to(device),
        "tune": faces[: 2].to(device),  # baseline tuning on training faces, never on test images
        "faces": faces[-cfg["test_faces"]:].to(device),
        "patches": patches[:: max(len(patches) // cfg["test_patches"], 1)][: cfg["test_patches"]].to(device),
    }


def problems(cfg: dict, device) -> dict:
    """``{name: (physics, complex_physics)}`` for the evaluation problems (fixed seeds)."""
    shape = (3, cfg["img_size"], cfg["img_size"])
    n = math.prod(shape)
    out = {}
    for sigma in cfg["sigmas"]:
        noise = dinv.physics.GaussianNoise(sigma / 255, rng=torch.Generator(device).manual_seed(sigma))
        out[f"denoising sigma={sigma}"] = (dinv.physics.Denoising(noise, device=device), False)
    for ratio in cfg["cs_ratios"]:
        noise = dinv.physics.GaussianNoise(cfg["measurement_noise"], rng=torch.Generator(device).manual_seed(1))
        physics = dinv.physics.CompressedSensing(m=round(ratio * n), img_size=shape, noise_model=noise, device=device,
                                                 rng=torch.Generator(device).manual_seed(2))
        out[f"CS m/n=1/{round(1 / ratio)}"] = (physics, False)
    for ratio in cfg["pr_ratios"]:
        # one complex Gaussian matrix shared by the colour channels (channelwise), m/n measurements per channel:
        # the same m/n as a full matrix, but at 64x64 it builds in 2 s instead of 45 s (deepinv takes the pinv of
        # the matrix) and a gradient of the data term costs 0.03 s instead of 0.17 s (measured, 2 threads)
        noise = dinv.physics.GaussianNoise(cfg["measurement_noise"], rng=torch.Generator(device).manual_seed(3))
        physics = dinv.physics.RandomPhaseRetrieval(m=round(ratio * n / shape[0]), img_size=shape, channelwise=True,
                                                    noise_model=noise, device=device,
                                                    rng=torch.Generator(device).manual_seed(4))
        out[f"PR m/n=1/{round(1 / ratio)}"] = (physics, True)
    return out


def measure(physics, complex_physics: bool, x: torch.Tensor) -> torch.Tensor:
    return physics(to_physics_input(x, complex_physics))


def meta_train(model, data: dict, cfg: dict, device, seed: int, name: str):
    """Meta-train on denoising sigma=25 of training faces (MetaTrainer, the model's own inner loop)."""
    noise = dinv.physics.GaussianNoise(25 / 255)
    half = len(data["train"]) // 2
    task = Task("denoising sigma=25", dinv.physics.Denoising(noise, device=device), data["train"][:half],
                data["train"][half:])
    outer = OuterOptimizer(lr=per_model(cfg["outer_lr"], name), grad_clip=1.0,
                           lr_scales=cfg["lr_scales"] if isinstance(model, MetaDIP) else None)
    trainer = SupervisedTrainer(model, [task], outer=outer, batch_size=cfg["batch_size"], device=device, seed=seed,
                                progress=sys.stderr.isatty())
    seconds = train_for(trainer, per_model(cfg["train_minutes"], name), name, validate_every=cfg["validate_every"],
                        rollback_above=cfg["rollback_above"])
    info = {"outer_steps": trainer.step, "selected_step": trainer.selected_step, "train_time_s": seconds,
            "validation": trainer.validation, "rollbacks": trainer.rollbacks}
    return trainer.model.eval(), info


def evaluate(method, x: torch.Tensor, physics, complex_physics: bool, psnr) -> dict:
    """PSNR per image (mean, std) and time per image of one reconstructor."""
    values, seconds, diverged = [], 0.0, 0  # PSNR of the images whose fit did not diverge
    for i in range(len(x)):
        y = measure(physics, complex_physics, x[i: i + 1])
        start = time.perf_counter()
        try:
            with torch.no_grad():
                x_hat = method(y, physics)
        except NonFiniteLossError:  # a diverging fit is counted in the row, never scored as an image
            diverged += 1
            continue
        finally:
            seconds += time.perf_counter() - start
        values.append(psnr(x_hat.clamp(0, 1), x[i: i + 1]).item())
    values = torch.tensor(values)
    return {"psnr": values.mean().item() if len(values) else None,
            "psnr_std": values.std().item() if len(values) > 1 else 0.0, "time_s": seconds / len(x),
            "diverged": diverged}


def tune_pnp(denoiser, physics, complex_physics, x_tune, cfg, psnr):
    """3x3x3 grid (strength, penalty, iterations) on the tuning faces, mean PSNR. The iteration counts are
    scored along one run of the largest per (strength, penalty): the same iterates as separate runs from the
    same start, for 40 instead of 10 + 20 + 40 iterations with the full grid (phase retrieval's PnP
    iterations take seconds each at 64x64 on a CPU)."""
    counts = set(cfg["pnp_iterations"])
    best = None
    for sigma in cfg["pnp_sigma"]:
        for gamma in cfg["pnp_gamma"]:
            method = baselines.PnPADMM(denoiser, sigma, gamma, max(counts), complex_physics=complex_physics)
            scores = {k: [] for k in counts}
            for i in range(len(x_tune)):
                xi = x_tune[i: i + 1]

                def record(k, z, xi=xi):
                    if k in counts:
                        scores[k].append(psnr(z.clamp(0, 1), xi).item())

                with torch.no_grad():
                    method(measure(physics, complex_physics, xi), physics, callback=record)
            for iterations in sorted(counts):
                score = sum(scores[iterations]) / len(scores[iterations])
                score = score if math.isfinite(score) else float("-inf")
                if best is None or score > best[0]:
                    best = (score, dict(sigma=sigma, gamma=gamma, iterations=iterations))
    grid = {"sigma": cfg["pnp_sigma"], "gamma": cfg["pnp_gamma"], "iterations": cfg["pnp_iterations"]}
    edges = baselines.grid_edges(best[1], grid)
    if edges:
        log(f"  WARNING PnP-ADMM: best {best[1]} has {edges} at the edge of the grid {grid}: may be under-tuned")
    return best[1]


def convergence(model: MetaDIP, dip: baselines.VanillaDIP, x: torch.Tensor, physics, steps: int, psnr) -> dict:
    """Figure 2: NMSE and PSNR against iterations and fitting time, for MetaDIP and DIP on one image."""
    y = physics(x)

    def scores(image):
        return psnr(image.clamp(0, 1), x).item(), (((image - x) ** 2).sum() / (x**2).sum()).item()

    meta = {"steps": [], "psnr": [], "nmse": [], "time_s": []}
    for k in [k for k in (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300) if k <= steps]:
        start = time.perf_counter()  # the image after k steps is a run of its own
        with torch.no_grad():
            image = model(y, physics, steps=k)
        meta["time_s"].append(time.perf_counter() - start)
        meta["steps"].append(k)
        for key, value in zip(("psnr", "nmse"), scores(image)):
            meta[key].append(value)

    vanilla = {"steps": [], "psnr": [], "nmse": [], "time_s": []}
    clock = {"fit": 0.0, "last": time.perf_counter()}

    def callback(k, image):
        clock["fit"] += time.perf_counter() - clock["last"]  # fitting time only, scoring excluded
        vanilla["steps"].append(k)
        vanilla["time_s"].append(clock["fit"])
        for key, value in zip(("psnr", "nmse"), scores(image)):
            vanilla[key].append(value)
        clock["last"] = time.perf_counter()

    with torch.no_grad():
        dip(y, physics, callback=callback)
    return {"MetaDIP": meta, "DIP": vanilla}


def speedup(model: MetaDIP, dip: baselines.VanillaDIP, x: torch.Tensor, physics, psnr) -> dict:
    """Per image: DIP's time to reach MetaDIP(50)'s PSNR / MetaDIP(50)'s time."""
    ratios, bounds = [], []
    for i in range(len(x)):
        xi = x[i: i + 1]
        y = physics(xi)
        start = time.perf_counter()
        with torch.no_grad():
            target = psnr(model(y, physics).clamp(0, 1), xi).item()
        meta_time = time.perf_counter() - start
        state = {"reached": None, "fit": 0.0, "last": time.perf_counter()}

        def callback(k, image, state=state):
            state["fit"] += time.perf_counter() - state["last"]
            if state["reached"] is None and psnr(image.clamp(0, 1), xi).item() >= target:
                state["reached"] = state["fit"]
            state["last"] = time.perf_counter()

        with torch.no_grad():
            dip(y, physics, callback=callback)
        reached = state["reached"] is not None
        ratios.append((state["reached"] if reached else state["fit"]) / meta_time)
        bounds.append(not reached)
    ratio = float(torch.tensor(ratios).median())
    return {"speedup": ratio, "per_image": ratios, "lower_bound": any(bounds),
            "note": "median over test faces; entries where DIP never reached MetaDIP(50)'s PSNR are lower bounds"}


def run(cfg: dict, context: Context) -> dict:
    """Run the benchmark; returns the results dict and writes results/figures/checkpoints to ``context.out``."""
    device, root, out, seed = context.torch_device(), context.root(), context.out_dir, context.seed
    unknown = set(cfg["methods"]) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)} in the `methods` setting; choose among {list(METHODS)}.")
    wanted = set(cfg["methods"])
    context.begin("MetaDIP benchmark", cfg)
    data = load_data(root, cfg, device)
    size = (3, cfg["img_size"], cfg["img_size"])
    psnr = dinv.loss.metric.PSNR()
    generator = dict(channels=cfg["channels"], latent_channels=cfg["latent_channels"],
                     fourier_features=cfg["fourier_features"])

    meta_models, meta_training = {}, {}
    torch.manual_seed(seed)
    if "MetaDIP" in wanted:
        log(f"meta-training on {len(data['train'])} CelebA faces {size}, denoising sigma=25, "
            f"{cfg['train_steps']} inner steps, minutes per model: {cfg['train_minutes']}")
        meta_models["MetaDIP"], meta_training["MetaDIP"] = meta_train(
            MetaDIP(size, steps=cfg["test_steps"], train_steps=cfg["train_steps"], lr=cfg["inner_lr"],
                    momentum=cfg["momentum"], tv_weight=cfg["tv_weight"], seed=seed, **generator),
            data, cfg, device, seed, "MetaDIP")
        if out is not None:
            save(meta_models["MetaDIP"], out / "metadip.pt", outer_steps=meta_training["MetaDIP"]["selected_step"],
                 train_time_s=meta_training["MetaDIP"]["train_time_s"])
    if "MetaSIREN" in wanted:
        meta_models["MetaSIREN"], meta_training["MetaSIREN"] = meta_train(
            MetaSIREN(size, steps=cfg["train_steps"], lr=cfg["siren_lr"], learn_lr=False, hidden=cfg["siren_hidden"],
                      layers=cfg["siren_layers"]),
            data, cfg, device, seed, "MetaSIREN")

    denoiser = load_denoiser(root / cfg["denoiser"], device=device)
    bm3d = None
    if "BM3D" in wanted:
        try:
            bm3d = dinv.models.BM3D()
            import bm3d as _  # noqa: F401  (deepinv's wrapper imports it lazily)
        except ImportError:
            bm3d = None  # the wrapper was built, the package is missing
            log("  BM3D: the `bm3d` package is not installed (pip install bm3d); its rows are left out")

    rows = []
    suite = problems(cfg, device)
    for name, (physics, complex_physics) in suite.items():
        methods = {}
        if name.startswith("denoising") and bm3d is not None:
            sigma = float(name.split("=")[1]) / 255
            methods["BM3D"] = lambda y, physics, s=sigma: bm3d(y, s)
        params = None
        if "PnP-ADMM" in wanted:
            params = tune_pnp(denoiser, physics, complex_physics, data["tune"], cfg, psnr)
            methods[f"PnP-ADMM (FFDNet) {params}"] = baselines.PnPADMM(denoiser, **params,
                                                                       complex_physics=complex_physics)
        for iterations in cfg["dip_iterations"] if "DIP" in wanted else ():
            methods[f"DIP ({iterations})"] = baselines.VanillaDIP(size, iterations=iterations, lr=cfg["dip_lr"],
                                                                  generator=dict(generator, complex_physics=complex_physics))
        for model in meta_models.values():
            model.complex_physics = complex_physics
        if "MetaSIREN" in meta_models:
            methods[f"MetaSIREN ({cfg['test_steps']})"] = (
                lambda y, physics: meta_models["MetaSIREN"](y, physics, steps=cfg["test_steps"]))
        if "MetaDIP" in meta_models:
            methods[f"MetaDIP ({cfg['test_steps']})"] = meta_models["MetaDIP"]
        for dataset in ("faces", "patches"):
            for method, recon in methods.items():
                score = evaluate(recon, data[dataset], physics, complex_physics, psnr)
                rows.append({"task": f"{name} ({dataset})", "method": method.split(" {")[0], **score,
                             **({"params": params} if method.startswith("PnP") else {})})
                log(f"  {name} {dataset:8s} {method:40s} {score['psnr'] or float('nan'):6.2f} ± {score['psnr_std']:.2f} dB "
                    f"{score['time_s']:.2f} s/image")
    for model in meta_models.values():
        model.complex_physics = False

    speed, curves = None, None
    if "MetaDIP" in meta_models:
        log("time-to-PSNR (denoising sigma=25, faces)")
        physics = suite["denoising sigma=25"][0] if "denoising sigma=25" in suite else dinv.physics.Denoising(
            dinv.physics.GaussianNoise(25 / 255, rng=torch.Generator(device).manual_seed(25)), device=device)
        dip = baselines.VanillaDIP(size, iterations=max(cfg["dip_iterations"]), lr=cfg["dip_lr"], generator=generator)
        speed = speedup(meta_models["MetaDIP"], dip, data["faces"], physics, psnr)
        log(f"  speed-up {speed['speedup']:.1f}x{' (lower bound)' if speed['lower_bound'] else ''}; per image "
            + ", ".join(f"{r:.1f}" for r in speed["per_image"]))
        curves = convergence(meta_models["MetaDIP"], dip, data["faces"][:1], physics, cfg["curve_steps"], psnr)

    result = context.result("metadip", dict(cfg, data_root=str(root), meta_training=meta_training), rows,
                            speedup=speed and speed["speedup"], speedup_detail=speed, convergence=curves)
    return context.finish(result, format_table(result), lambda folder: draw_figures(result, folder))


def format_table(result: dict) -> str:
    rows = result["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    def psnr_cell(r):
        if r is None:
            return "—"
        scored = "" if r["psnr"] is None else f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}"
        return scored + (f" (diverged on {r['diverged']})" if r.get("diverged") else "")

    time_rows = [dict(r, task=r["task"].split(" (")[0]) for r in rows if r["task"].endswith("(faces)")]
    time_cell = lambda r: "—" if r is None else f"{r['time_s']:.2f}"  # noqa: E731
    speed = result["speedup_detail"]
    table = ("PSNR (dB, mean ± std over test images)\n\n" + markdown_table(rows, tasks, methods, psnr_cell)
             + "\nTime per image (s, faces)\n\n"
             + markdown_table(time_rows, list(dict.fromkeys(r["task"] for r in time_rows)), methods, time_cell))
    if speed is None:
        return table
    return (table + f"\nTime-to-PSNR speed-up of MetaDIP(50) over DIP (denoising sigma=25, faces): "
              f"{'≥ ' if speed['lower_bound'] else ''}{speed['speedup']:.1f}x (median; per image "
            + ", ".join(f"{r:.1f}" for r in speed["per_image"]) + ")\n")


def draw_figures(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result["convergence"] is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, record in result["convergence"].items():
        axes[0].semilogy(record["steps"], record["nmse"], "-o" if name == "MetaDIP" else "-", ms=3, label=name)
        axes[1].plot(record["time_s"], record["psnr"], "-o" if name == "MetaDIP" else "-", ms=3, label=name)
    axes[0].set_xlabel("iterations")
    axes[0].set_ylabel("NMSE")
    axes[0].set_xscale("log")
    axes[1].set_xlabel("fitting time (s)")
    axes[1].set_ylabel("PSNR (dB)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.legend()
        ax.set_title("denoising sigma=25, one held-out face")
    save_figure(fig, out / "convergence.png", dpi=120)
