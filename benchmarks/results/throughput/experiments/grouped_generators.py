"""Experiment behind docs/performance.rst (MetaDIP): one generator step (forward, gradient, second-order backward)
for 2 or 4 images, separately or as grouped convolutions. Run: python grouped_generators.py (one thread)."""
import torch, time
import torch.nn.functional as F
torch.set_num_threads(1)
torch.manual_seed(0)
chs = (16, 32, 64); cin = 32; H = 64
def make(B):
    # weights for B independent generators, stored grouped: (B*out, in, k, k)
    ws = {}
    ws["inc"] = torch.randn(B*chs[0], cin, 3, 3) * 0.1
    for i,(a,b) in enumerate(zip(chs[:-1], chs[1:])):
        ws[f"down{i}"] = torch.randn(B*b, a, 3, 3) * 0.1
        ws[f"up{i}"] = torch.randn(B*a, b + a, 3, 3) * 0.1
    ws["out"] = torch.randn(B*3, chs[0], 1, 1) * 0.1
    for w in ws.values(): w.requires_grad_()
    return ws
def conv(x, w, B, stride=1):
    x = F.pad(x, (1,1,1,1), mode="reflect")
    return F.leaky_relu(F.conv2d(x, w, stride=stride, groups=B), 0.2)
def gen(z, ws, B):
    # z: (1, cin, H, W) shared; grouped input: repeat B times along channels
    x = z.repeat(1, B, 1, 1)
    skips = [conv(x, ws["inc"], B)]
    for i in range(len(chs)-1):
        skips.append(conv(skips[-1], ws[f"down{i}"], B, stride=2))
    h = skips.pop()
    for i in reversed(range(len(chs)-1)):
        skip = skips.pop()
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        # interleave per group: cat per group along channels
        hb = h.view(1, B, -1, *h.shape[-2:]); sb = skip.view(1, B, -1, *skip.shape[-2:])
        h = conv(torch.cat([hb, sb], 2).view(1, -1, *skip.shape[-2:]), ws[f"up{i}"], B)
    return torch.sigmoid(F.conv2d(h, ws["out"], groups=B))
z = torch.rand(1, cin, H, H)
def step(ws, B):
    out = gen(z, ws, B)
    g = torch.autograd.grad(out.square().sum(), list(ws.values()), create_graph=True)
    return sum(gi.square().sum() for gi in g)  # second order like MAML
def t(f, n=10):
    f(); s=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-s)/n*1e3
for rnd in range(3):
    w1a, w1b, w2 = make(1), make(1), make(2)
    a = t(lambda: (step(w1a,1) + step(w1b,1)).backward())
    b = t(lambda: step(w2,2).backward())
    w4 = make(4); w1s = [make(1) for _ in range(4)]
    c = t(lambda: sum(step(w,1) for w in w1s).backward())
    d = t(lambda: step(w4,4).backward())
    print(f"2 separate {a:.1f} ms, grouped {b:.1f} ms, x{a/b:.2f} | 4 separate {c:.1f}, grouped {d:.1f}, x{c/d:.2f}", flush=True)
