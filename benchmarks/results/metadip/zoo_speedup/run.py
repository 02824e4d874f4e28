"""Side run: the zoo's MetaDIP (meta-trained at 64x64 by the campaign) against DIP, time-to-PSNR speed-up with the
benchmark's own `speedup` function (denoising sigma 25/255, 4 held-out CelebA faces), at 64x64 and at 128x128
(the same faces upsampled; MetaDIP runs at the new size through `resized`, DIP is built for it).

Run: DEEPINV_META_DATA=... python benchmarks/results/metadip/zoo_speedup/run.py > .../output.txt
"""

import json
from pathlib import Path

import deepinv as dinv
import torch

import deepinv_meta
from deepinv_meta import baselines
from deepinv_meta.benchmarks.metadip import FULL, load_data, speedup
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.benchmarks.settings import configure
from deepinv_meta.data import data_root

torch.set_num_threads(1)
cfg = configure(FULL, {"img_size": 64, "test_faces": 4})
faces = load_data(data_root(), cfg, "cpu")["faces"]
info = deepinv_meta.pretrained.available()["metadip"]
model = deepinv_meta.pretrained.load("metadip")
print(f"zoo MetaDIP speed-up | {machine('cpu')} | {info['outer_steps']} outer steps, {info['cpu_minutes']} CPU min",
      flush=True)
psnr = dinv.loss.metric.PSNR()
results = {}
for size in (64, 128):
    x = faces if size == 64 else torch.nn.functional.interpolate(faces, size=(size, size), mode="bicubic").clamp(0, 1)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255, rng=torch.Generator().manual_seed(25)))
    generator = dict(channels=cfg["channels"], latent_channels=cfg["latent_channels"],
                     fourier_features=cfg["fourier_features"])
    dip = baselines.VanillaDIP((3, size, size), iterations=max(cfg["dip_iterations"]), lr=cfg["dip_lr"],
                               generator=generator)
    speed = speedup(model, dip, x, physics, psnr)
    results[size] = speed
    print(f"{size} px: speed-up {speed['speedup']:.1f}x{' (lower bound)' if speed['lower_bound'] else ''}; per image "
          + ", ".join(f"{r:.1f}" for r in speed["per_image"]), flush=True)
json.dump({"speedup": results[64]["speedup"], "speedup_128": results[128]["speedup"], "detail": results},
          open(Path(__file__).with_name("results.json"), "w"), indent=1)
