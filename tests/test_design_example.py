"""The example of ../shared/DESIGN.md ("What a user writes") runs as written, at test sizes."""

import deepinv as dinv
import torch

import deepinv_meta
from deepinv_meta import MetaPDNet, MetaTrainer, finetune
from deepinv_meta.bilevel import InnerLoop
from deepinv_meta.tasks import meta_prior_tasks


def test_the_design_example_runs(tmp_path):
    model = MetaPDNet.from_pretrained("meta-prior-unsupervised")
    physics = dinv.physics.Downsampling(img_size=(1, 32, 32), factor=2)
    x = torch.rand(2, 1, 32, 32)
    y = physics(x)
    adapted = finetune(model, physics, y, inner=InnerLoop(steps=2, lr=1e-3), loss="equivariant")
    assert adapted(y, physics).shape == x.shape
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    dinv.test(adapted, loader, physics, device="cpu")
    assert not torch.equal(next(iter(adapted.parameters())), next(iter(model.parameters())))

    tasks = meta_prior_tasks(torch.rand(8, 1, 24, 24), patch_size=16)
    trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), tasks, inner=InnerLoop(steps=1, lr=1e-3, optimizer="adam"),
                          inner_loss="unsupervised", checkpoint=tmp_path / "meta.pt", batch_size=2, progress=False)
    trainer.train(steps=2)
    assert (tmp_path / "meta.pt").is_file()
    assert "meta-prior-unsupervised" in deepinv_meta.pretrained.available()
