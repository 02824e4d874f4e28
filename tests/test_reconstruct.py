"""`deepinv-meta reconstruct`: the user's own measurement files in, reconstructions out."""

import hashlib
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from deepinv_meta.data import center_crop, embedded_images
from deepinv_meta.physics import build_physics


def run(*args):
    done = subprocess.run([sys.executable, "-m", "deepinv_meta.cli", "reconstruct", *map(str, args)],
                          capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr.strip()


def png(path, image):
    Image.fromarray((image.clamp(0, 1).numpy()[0] * 255).astype(np.uint8)).save(path)
    return path


def test_super_resolution_of_png_files(tmp_path):
    x = torch.stack([center_crop(im, 32) for im in embedded_images(("camera", "coffee"))])
    y = build_physics("sr", (32, 32), factor=2)(x)
    files = [png(tmp_path / f"low{i}.png", y[i]) for i in range(2)]
    before = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    code, out, err = run(*files, "--physics", "sr", "--factor", "2", "--out", tmp_path / "rec", "--steps", "2",
                         "--self-ensemble")
    assert code == 0, err
    for f, h in zip(files, before):
        result = Image.open(tmp_path / "rec" / f"{f.stem}_reconstruction.png")
        assert result.size == (32, 32) and hashlib.sha256(f.read_bytes()).hexdigest() == h
    assert out.count("||A x - y|| / ||y||") == 2


def test_mri_kspace_npy_with_its_mask_inferred(tmp_path):
    x = torch.stack([center_crop(embedded_images(("camera",))[0], 32)])
    physics = build_physics("mri", (32, 32), acceleration=4, seed=1)
    kspace = physics(torch.cat([x, torch.zeros_like(x)], dim=1))[0].numpy()
    np.save(tmp_path / "k.npy", kspace[0] + 1j * kspace[1])  # complex (H, W), as scanners give
    code, out, err = run(tmp_path / "k.npy", "--physics", "mri", "--out", tmp_path / "rec", "--steps", "1")
    assert code == 0, err
    assert (tmp_path / "rec" / "k_reconstruction.png").is_file() and np.load(tmp_path / "rec" / "k_reconstruction.npy").shape == (2, 32, 32)
    residual = float(out.split("= ")[-1].split(")")[0])
    assert residual < 0.5  # consistent with the measured k-space


def test_project_makes_each_reconstruction_reproduce_its_measurement(tmp_path):
    x = torch.stack([center_crop(embedded_images(("coffee",))[0], 32)])
    files = [png(tmp_path / "low.png", build_physics("sr", (32, 32), factor=2)(x)[0])]
    residuals = []
    for project in ((), ("--project",)):
        code, out, err = run(*files, "--physics", "sr", "--out", tmp_path / f"rec{len(project)}", "--steps", "1",
                             *project)
        assert code == 0, err
        residuals.append(float(out.split("= ")[-1].split(")")[0]))
    assert residuals[1] < 1e-5 < residuals[0]


def test_a_measurement_that_does_not_fit_the_operator_is_refused(tmp_path):
    image = png(tmp_path / "y.png", torch.rand(1, 16, 16))
    code, _, err = run(image, "--physics", "inpainting", "--out", tmp_path / "rec")
    assert code == 2 and "--mask" in err
    mask = png(tmp_path / "mask.png", torch.ones(1, 8, 8))
    code, _, err = run(image, "--physics", "inpainting", "--mask", mask, "--out", tmp_path / "rec")
    assert code == 2 and "must match the measurement" in err
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 4)))
    code, _, err = run(tmp_path / "bad.npy", "--physics", "mri", "--out", tmp_path / "rec")
    assert code == 2 and "expected (H, W) complex or (2, H, W)" in err and "Traceback" not in err
    code, _, err = run(image, "--physics", "denoising", "--self-ensemble", "--out", tmp_path / "rec")
    assert code == 2 and "--self-ensemble applies to --physics sr" in err


def test_inputs_are_never_overwritten(tmp_path):
    image = png(tmp_path / "y_reconstruction.png", torch.rand(1, 16, 16))  # a name an output could take...
    measurement = png(tmp_path / "y.png", torch.rand(1, 16, 16))
    code, _, err = run(image, measurement, "--physics", "denoising", "--out", tmp_path, "--steps", "1")
    assert code == 2 and "also an input" in err


def test_a_test_time_optimiser_from_the_zoo_reconstructs_and_names_a_channel_mismatch(tmp_path):
    noisy = tmp_path / "noisy.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(noisy)
    code, out, err = run(noisy, "--physics", "denoising", "--model", "metadip", "--out", tmp_path / "rec")
    assert code == 2 and "add --color" in err
    code, out, err = run(noisy, "--physics", "denoising", "--model", "metadip", "--color", "--out", tmp_path / "rec")
    assert code == 0, err
    assert Image.open(tmp_path / "rec" / "noisy_reconstruction.png").size == (32, 32)


def test_a_learned_variational_solver_from_the_zoo_runs_as_it_is(tmp_path):
    digit = torch.zeros(1, 28, 28)
    digit[:, 6:22, 12:16] = 1.0  # a "1"
    mask = torch.ones(1, 28, 28)
    mask[:, 10:19, 10:19] = 0  # a 9x9 hole, as in the paper's MNIST task
    observed, mask_file = png(tmp_path / "digit.png", digit * mask), png(tmp_path / "mask.png", mask)
    code, _, err = run(observed, "--physics", "inpainting", "--mask", mask_file, "--model", "variational-mnist",
                       "--steps", "5", "--loss", "unsupervised", "--out", tmp_path / "rec")  # it would ignore them
    assert code == 2 and "drop --steps/--lr, --loss unsupervised" in err
    code, out, err = run(observed, "--physics", "inpainting", "--mask", mask_file, "--model", "variational-mnist",
                         "--out", tmp_path / "rec")
    assert code == 0, err
    assert "as it is" in out and "adapting" not in out
    assert Image.open(tmp_path / "rec" / "digit_reconstruction.png").size == (28, 28)
