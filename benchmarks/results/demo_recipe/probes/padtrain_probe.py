"""Probe (fold 1): adapting on border-extended measurements too (scored with BorderPadded).
Run: python padtrain_probe.py 1; numbers in docs/notes.rst (Demo)."""
import sys, time, torch, torch.nn.functional as F
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.physics import Bicubic, BorderPadded, OperatorSpec
torch.set_num_threads(1)
fold = int(sys.argv[1])
imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
x = torch.stack([center_crop(im, 96) for im in imgs])
spec = OperatorSpec.named("sr", factor=2); ph = spec.build((96, 96), "cpu"); y = ph(x)
yp = F.pad(y, (1, 1, 1, 1), mode="replicate"); php = spec.build((100, 100), "cpu")
bic = psnr_per_image(Bicubic(2), ph, y, x).mean().item()
meta = MetaPDNet.from_pretrained("meta-prior-supervised")
curve = {}
def score(k, cur):
    if k % 25 == 0: curve[k] = psnr_per_image(BorderPadded(cur, spec), ph, y, x).mean().item() - bic
obj, _ = adaptation_objective("equivariant", spec, rng=torch.Generator().manual_seed(1))
finetune(meta, php, yp, inner=InnerLoop(steps=100, lr=1e-3), loss=obj, batch_size=4, seed=0, on_step=score)
print(f"adapted on padded, fold {fold}:", " ".join(f"{k}:{v:+.2f}" for k, v in curve.items()), flush=True)
