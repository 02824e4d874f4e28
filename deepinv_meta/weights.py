r"""Load denoiser weights from local files into deepinv's own denoisers.

Offline machines cannot use deepinv's ``pretrained="download"``. These loaders read the common
public weight files and return ordinary :class:`deepinv.models.DnCNN` / :class:`deepinv.models.FFDNet`
instances, so the rest of deepinv (``PnP``, ``RED``, ``DPIR``...) uses them unchanged:

- deepinv's own format (``in_conv.*`` / ``blocks.*`` keys), loaded as is;
- KAIR DnCNN (``model.N.*``, batch norm merged, network predicts the noise);
- SaoYan DnCNN (``module.dncnn.N.*``, with batch norm, predicts the noise);
- IPOL FFDNet (``module.intermediate_dncnn.itermediate_dncnn.N.*``, with batch norm, predicts the
  noise from the noise map and the 2x2-deinterleaved image).

Batch norms are folded into the preceding convolution (evaluation mode), and "predict the noise"
networks become deepinv's residual form :math:`D(x) = x - N(x)` by negating the last convolution.
Users with internet keep deepinv's real path (``dinv.models.DRUNet(pretrained="download")``);
:func:`load_denoiser` also accepts ``"drunet"`` for it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import deepinv as dinv
import torch

from .io import atomic_write_json, safe_load, sha256_file

# Convolution and batch-norm entries of a Sequential, by their index in the Sequential.
_CONV_KEY = re.compile(r"(\d+)\.weight$")


def _strip_prefix(state: dict, prefixes: tuple[str, ...]) -> dict:
    for prefix in prefixes:
        if all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state


def _sequential_convs(state: dict) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    r"""Ordered (weight, bias) of the convolutions of a plain ``nn.Sequential`` state dict, batch norms folded in.

    A batch norm that follows a convolution (entry with ``running_mean``) is merged into it:
    :math:`\gamma (Wx + b - \mu)/\sqrt{v + \epsilon} + \beta`.
    """
    indices = sorted({int(m.group(1)) for key in state if (m := _CONV_KEY.search(key))})
    convs = []
    for index in indices:
        weight = state[f"{index}.weight"]
        if weight.ndim == 4:
            bias = state.get(f"{index}.bias")
            convs.append([weight.clone(), None if bias is None else bias.clone()])
        elif f"{index}.running_mean" in state:  # batch norm after the last convolution
            if not convs:
                raise ValueError("batch norm before any convolution: not a DnCNN/FFDNet state dict.")
            weight_c, bias_c = convs[-1]
            scale = state[f"{index}.weight"] / torch.sqrt(state[f"{index}.running_var"] + 1e-5)
            bias_c = torch.zeros(weight_c.shape[0]) if bias_c is None else bias_c
            convs[-1] = [weight_c * scale[:, None, None, None],
                         (bias_c - state[f"{index}.running_mean"]) * scale + state[f"{index}.bias"]]
    return [tuple(conv) for conv in convs]


def _copy_noise_predictor(layers, convs) -> None:
    """Copy folded ``convs`` into ``layers`` and negate the last one: a network predicting the noise
    ``N(x)`` (denoised as ``x - N(x)``) becomes deepinv's residual form, which adds its output to ``x``."""
    with torch.no_grad():
        for layer, (weight, bias) in zip(layers, convs):
            layer.weight.copy_(weight)
            layer.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)
        layers[-1].weight.neg_()
        layers[-1].bias.neg_()


def _read_state(path) -> dict:
    state = safe_load(_check_file(path), map_location="cpu")
    return state.get("state_dict", state)


def _check_file(path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"denoiser weights {path} not found. Pass the path of a local .pth file (offline data: "
            "$DEEPINV_META_DATA/weights/...), or 'drunet' to use deepinv's download."
        )
    return path


def load_dncnn(path: str | os.PathLike, device="cpu") -> dinv.models.DnCNN:
    r"""A :class:`deepinv.models.DnCNN` with weights from a deepinv, KAIR or SaoYan DnCNN file.

    :param str path: the ``.pth`` file.
    :param device: where to put the model.
    :return: the denoiser in evaluation mode, ``D(x, sigma) = x - N(x)`` (``sigma`` ignored: DnCNN is
        trained for one noise level, or blind).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.weights import load_dncnn
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(8, 1, 3, padding=1))
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "kair.pth")
    >>> torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, path)
    >>> dncnn = load_dncnn(path)
    >>> x = torch.rand(1, 1, 8, 8)
    >>> torch.allclose(dncnn(x), x - net(x), atol=1e-6)
    True
    """
    return _dncnn_from_state(_read_state(path), path, device)


def _dncnn_from_state(state: dict, path, device) -> dinv.models.DnCNN:
    if any(key.startswith("in_conv.") for key in state):  # deepinv's own format
        depth = 2 + len({key.split(".")[1] for key in state if key.startswith("conv_list.")})
        channels = state["in_conv.weight"].shape[1]
        model = dinv.models.DnCNN(in_channels=channels, out_channels=state["out_conv.weight"].shape[0],
                                  depth=depth, nf=state["in_conv.weight"].shape[0], pretrained=None)
        model.load_state_dict(state)
        return model.eval().to(device)
    state = _strip_prefix(state, ("module.dncnn.", "dncnn.", "module.model.", "model."))
    convs = _sequential_convs(state)
    if len(convs) < 3:
        raise ValueError(f"{path}: expected a DnCNN state dict (deepinv, KAIR 'model.*' or SaoYan 'module.dncnn.*' keys).")
    nf, in_channels = convs[0][0].shape[:2]
    model = dinv.models.DnCNN(in_channels=in_channels, out_channels=convs[-1][0].shape[0], depth=len(convs),
                              nf=nf, pretrained=None)
    _copy_noise_predictor([model.in_conv, *model.conv_list, model.out_conv], convs)
    return model.eval().to(device)


def load_ffdnet(path: str | os.PathLike, device="cpu") -> dinv.models.FFDNet:
    r"""A :class:`deepinv.models.FFDNet` (noise-level conditioned) from a deepinv or IPOL FFDNet file.

    IPOL's network reads ``[noise map, deinterleaved image]`` (``1 + 4C`` channels at half resolution) and
    predicts the noise; deepinv's reads the deinterleaved ``[image, noise map]`` (``4C + 4C`` channels)
    and returns the image. The first convolution is re-indexed (deepinv's single noise map, unshuffled into
    four copies, carries the sum of IPOL's per-colour noise weights divided by four), batch norms are folded, and the last
    convolution is negated under ``residual_denoising=True``; the result is the same function.

    :param str path: the ``.pth`` file.
    :param device: where to put the model.
    :return: the denoiser in evaluation mode, called as ``model(x, sigma)`` with ``sigma`` in [0, 1] units.
    """
    return _ffdnet_from_state(_read_state(path), path, device)


def _ffdnet_from_state(state: dict, path, device) -> dinv.models.FFDNet:
    if any(key.startswith("blocks.") for key in state):  # deepinv's own format
        first = state["blocks.0.0.weight"]
        layers = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
        # first conv input: [image (C), one noise map] x 4 sub-pixels
        model = dinv.models.FFDNet(n_conv_layers=layers, nf=first.shape[0], img_channels=first.shape[1] // 4 - 1,
                                   last_conv_bias=f"blocks.{layers - 1}.bias" in state, pretrained=None)
        model.load_state_dict(state)
        return model.eval().to(device)
    state = _strip_prefix(state, ("module.intermediate_dncnn.itermediate_dncnn.", "intermediate_dncnn.itermediate_dncnn."))
    convs = _sequential_convs(state)
    if len(convs) < 3 or convs[0][0].shape[1] % 5:
        raise ValueError(f"{path}: expected an IPOL FFDNet state dict ('module.intermediate_dncnn.*' keys).")
    first_weight, first_bias = convs[0]
    nf, colours = first_weight.shape[0], first_weight.shape[1] // 5
    model = dinv.models.FFDNet(n_conv_layers=len(convs), nf=nf, img_channels=colours, residual_denoising=True,
                               last_conv_bias=True, orthogonal_init=False, pretrained=None)
    # IPOL input channels: [noise map per colour (C), image sub-pixel (i, j) of colour c at 4c + 2i + j];
    # deepinv: PixelUnshuffle of [image (C), one noise map]: channel 4k + 2i + j for k in 0..C. The C
    # identical IPOL noise maps and the 4 identical sub-pixels of deepinv's map share one weight.
    weight = torch.zeros(nf, 4 * colours + 4, 3, 3)
    weight[:, : 4 * colours] = first_weight[:, colours:]
    weight[:, 4 * colours:] = first_weight[:, :colours].sum(dim=1, keepdim=True) / 4
    convs[0] = (weight, first_bias)
    _copy_noise_predictor([model.blocks[0][0], *(block[0] for block in model.blocks[1:-1]), model.blocks[-1]], convs)
    return model.eval().to(device)


DRUNET_GREY = "drunet_deepinv_gray_finetune_26k.pth"


def drunet(device="cpu") -> torch.nn.Module:
    """deepinv's pretrained grey DRUNet, its weights read with ``weights_only=True``.

    Same file, URL and cache as ``deepinv.models.DRUNet(pretrained="download")`` (torch hub's
    ``checkpoints/`` folder; downloaded once, which needs internet), but deepinv's loader unpickles that cached
    file without ``weights_only``, so a file planted in the cache could run code; here it is refused.
    """
    from deepinv.models.utils import get_weights_url

    path = Path(torch.hub.get_dir()) / "checkpoints" / DRUNET_GREY
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(get_weights_url(model_name="drunet", file_name=DRUNET_GREY), str(path))
    model = dinv.models.DRUNet(in_channels=1, out_channels=1, pretrained=None, device=device)
    model.load_state_dict(read_first_seen(path))
    return model.eval()


def read_first_seen(path: Path) -> dict:
    """The state dict of ``path`` (read ``weights_only``), if its SHA-256 is the one recorded the first time a file
    of that name was read.

    deepinv publishes no hash of its DRUNet weights (and this project's machines cannot download them to pin
    one), so the first file read is trusted and its hash recorded in ``~/.cache/deepinv_meta/weight_hashes.json``;
    a file that changes afterwards (replaced in the shared torch hub cache) is refused.
    """
    record = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepinv_meta" / "weight_hashes.json"
    known = json.loads(record.read_text()) if record.is_file() else {}
    digest = sha256_file(path)
    if path.name in known and known[path.name] != digest:
        raise ValueError(f"{path} changed since it was first used (SHA-256 {digest[:12]}... instead of "
                         f"{known[path.name][:12]}..., recorded in {record}); delete it to download it again.")
    state = _read_state(path)  # only a file that reads safely is recorded
    if path.name not in known:
        atomic_write_json({**known, path.name: digest}, record)
    return state


def load_denoiser(spec: str | os.PathLike, device="cpu") -> torch.nn.Module:
    """A denoiser from a weight file (DnCNN or FFDNet formats, detected from the keys) or ``"drunet"``
    (:func:`drunet`: deepinv's pretrained weights, downloaded once, loaded with ``weights_only=True``)."""
    if str(spec).lower() == "drunet":
        return drunet(device)
    state = _read_state(spec)  # read once, dispatch on the key layout
    keys = " ".join(state)
    if "intermediate_dncnn" in keys or "blocks." in keys:
        return _ffdnet_from_state(state, spec, device)
    return _dncnn_from_state(state, spec, device)
