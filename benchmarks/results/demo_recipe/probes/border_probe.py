"""Probe (fold 1): PSNR of the adapted network and of bicubic inside margins of 0-8 pixels, and of the network
reconstructing from measurements extended by 1/4/8 replicated pixels. Run: python border_probe.py 1;
numbers in docs/notes.rst (Demo)."""
import sys, time, torch, torch.nn.functional as F
from deepinv_meta import MetaPDNet
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.physics import Bicubic, OperatorSpec
torch.set_num_threads(1)
fold = int(sys.argv[1]); model = sys.argv[2] if len(sys.argv) > 2 else "meta-prior-supervised"
imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
x = torch.stack([center_crop(im, 96) for im in imgs])
spec = OperatorSpec.named("sr", factor=2); ph = spec.build((96, 96), "cpu"); y = ph(x)
def psnr(a, b, m=0):
    if m: a, b = a[..., m:-m, m:-m], b[..., m:-m, m:-m]
    mse = ((a.clamp(0, 1) - b) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).mean().item()
meta = MetaPDNet.from_pretrained(model)
obj, _ = adaptation_objective("equivariant", spec, rng=torch.Generator().manual_seed(1))
ad = finetune(meta, ph, y, inner=InnerLoop(steps=100, lr=1e-3), loss=obj, batch_size=4, seed=0)
with torch.no_grad():
    xb, xn = Bicubic(2)(y, ph), ad(y, ph)
    out = {}
    for p in (1, 4, 8):
        yp = F.pad(y, (p, p, p, p), mode="replicate"); php = spec.build(tuple(2 * s for s in yp.shape[-2:]), "cpu")
        out[p] = ad(yp, php)[..., 2*p:-2*p, 2*p:-2*p]
for m in (0, 1, 2, 4, 8):
    print(f"margin {m}: bicubic {psnr(xb, x, m):.2f} net {psnr(xn, x, m):.2f} " + " ".join(f"pad{p} {psnr(v, x, m):.2f}" for p, v in out.items()))
