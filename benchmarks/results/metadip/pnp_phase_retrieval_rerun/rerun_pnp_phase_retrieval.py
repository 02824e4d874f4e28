# Run from the repository root with DEEPINV_META_DATA set, e.g.:
#   python benchmarks/results/metadip/pnp_phase_retrieval_rerun/rerun_pnp_phase_retrieval.py 32 > output_32px.txt
"""PnP-ADMM phase-retrieval rows of the MetaDIP benchmark again, with the benchmark's own functions
(problems, tuning grid on the 2 tuning faces, evaluation on the held-out faces and patches)."""
import sys, torch, deepinv as dinv
from deepinv_meta.benchmarks import metadip as B
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.benchmarks.settings import configure
from deepinv_meta import baselines
from deepinv_meta.weights import load_denoiser
size = int(sys.argv[1])
torch.set_num_threads(2)
cfg = configure(B.FULL, {"img_size": size})
device = torch.device("cpu")
print(f"PnP-ADMM phase retrieval rows, img_size={size} | {machine(device)}", flush=True)
root = B.data_root(None)
data = B.load_data(root, cfg, device)
psnr = dinv.loss.metric.PSNR()
denoiser = load_denoiser(root / cfg["denoiser"], device=device)
for name, (physics, complex_physics) in B.problems(cfg, device).items():
    if not name.startswith("PR"):
        continue
    params = B.tune_pnp(denoiser, physics, complex_physics, data["tune"], cfg, psnr)
    method = baselines.PnPADMM(denoiser, **params, complex_physics=complex_physics)
    for dataset in ("faces", "patches"):
        score = B.evaluate(method, data[dataset], physics, complex_physics, psnr)
        print(f"  {name} {dataset:8s} PnP-ADMM (FFDNet) {params} {score['psnr']:6.2f} ± {score['psnr_std']:.2f} dB "
              f"{score['time_s']:.2f} s/image", flush=True)
