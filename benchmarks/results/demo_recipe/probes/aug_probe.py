"""Probe (fold 1, supervised zoo model at 1531 steps): more unlabelled measurements for the equivariant loss with
the downscaled pairs: FOLD flips (the 8 flips/transposes of each measurement) or FOLD crops (56 more crops).
Run: DEEPINV_META_DATA=... python aug_probe.py 1 flips; numbers in docs/notes.rst (Demo)."""
import sys, time, torch, deepinv as dinv
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.physics import Bicubic, OperatorSpec
torch.set_num_threads(1)
fold = int(sys.argv[1]); mode = sys.argv[2]
imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
x = torch.stack([center_crop(im, 96) for im in imgs])
spec = OperatorSpec.named("sr", factor=2)
ph = spec.build((96, 96), "cpu")
y = ph(x)
if mode == "flips":  # each LR image flipped: measurements of flipped (and 1-px rolled) HR images
    ya = torch.cat([y, y.flip(-1), y.flip(-2), y.flip(-1, -2), y.transpose(-1, -2), y.transpose(-1, -2).flip(-1), y.transpose(-1, -2).flip(-2), y.transpose(-1, -2).flip(-1, -2)])
elif mode == "crops":  # more unlabelled crops of the same images (corners)
    extra = []
    for im in imgs:
        h, w = im.shape[-2:]
        for (i, j) in ((0, 0), (0, w - 96), (h - 96, 0), (h - 96, w - 96)):
            extra.append(im[..., i:i+96, j:j+96])
    ya = torch.cat([y, ph(torch.stack(extra))])
else:
    ya = y
bic = psnr_per_image(Bicubic(2), ph, y, x).mean().item()
meta = MetaPDNet.from_pretrained("meta-prior-supervised")
curve = {}
def score(k, cur):
    if k % 25 == 0: curve[k] = psnr_per_image(cur, ph, y, x).mean().item() - bic
t = time.perf_counter()
obj, label = adaptation_objective("equivariant", spec, rng=torch.Generator().manual_seed(1))
finetune(meta, ph, ya, inner=InnerLoop(steps=100, lr=1e-3), loss=obj, batch_size=4, seed=0, on_step=score)
print(f"{mode} fold {fold} ({len(ya)} measurements): bicubic {bic:.2f}", " ".join(f"{k}:{v:+.2f}" for k, v in curve.items()), f"{time.perf_counter()-t:.0f}s", flush=True)
