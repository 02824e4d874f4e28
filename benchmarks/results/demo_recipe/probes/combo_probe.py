"""Probe (the first look at the downscaled pairs, written before DownscaledPairsLoss existed): equivariant loss plus
WEIGHT x the pairs, 150 steps at LR. Run: python combo_probe.py FOLD LR MODEL WEIGHT; the committed run.py
reproduces its numbers at 100 steps."""
import sys, time, torch, deepinv as dinv
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.losses import equivariance_term
from deepinv_meta.physics import Bicubic, OperatorSpec
torch.set_num_threads(1)
fold = int(sys.argv[1]); lr = float(sys.argv[2]); model = sys.argv[3]; weight = float(sys.argv[4])
imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
x = torch.stack([center_crop(im, 96) for im in imgs])
ph = OperatorSpec.named("sr", factor=2).build((96, 96), "cpu")
small = OperatorSpec.named("sr", factor=2).build((48, 48), "cpu")
class Pairs(dinv.loss.Loss):
    def forward(self, x_net, y, physics, model, **kw):
        return weight * torch.mean((model(small.A(y), small) - y) ** 2)
y = ph(x)
bic = psnr_per_image(Bicubic(2), ph, y, x).mean().item()
meta = MetaPDNet.from_pretrained(model)
curve = {}
def score(k, cur):
    if k % 25 == 0: curve[k] = psnr_per_image(cur, ph, y, x).mean().item() - bic
t = time.perf_counter()
loss = [dinv.loss.MCLoss(), equivariance_term("shift", torch.Generator().manual_seed(1)), Pairs()]
finetune(meta, ph, y, inner=InnerLoop(steps=150, lr=lr), loss=loss, batch_size=4, seed=0, on_step=score)
print(f"eq+pairs(w={weight}) fold {fold} lr {lr} {model}: bicubic {bic:.2f}", " ".join(f"{k}:{v:+.2f}" for k, v in curve.items()), f"{time.perf_counter()-t:.0f}s", flush=True)
