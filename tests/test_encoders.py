"""Encoders: shapes, unit norm, torchvision names, ImageNet weights, bf16, the filter bank."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_tpm.encoders import (
    ENCODER_NAMES,
    FilterBankEncoder,
    ResNetEncoder,
    build_encoder,
    load_imagenet_weights,
)
from napari_tpm.encoders.body_frame import body_boxes
from napari_tpm.encoders.filterbank import GROUPS

LIGHT = ("resnet18-l3", "resnet18")


def _torchvision_names(blocks: tuple[int, ...], bottleneck: bool) -> set[str]:
    """State-dict keys of torchvision's ResNet trunk, written out from its documented layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = {"conv1.weight", *(f"bn1.{p}" for p in bn)}
    convs = 3 if bottleneck else 2
    for i, n in enumerate(blocks, start=1):
        for j in range(n):
            pre = f"layer{i}.{j}."
            for c in range(1, convs + 1):
                names.add(f"{pre}conv{c}.weight")
                names |= {f"{pre}bn{c}.{p}" for p in bn}
            needs_down = j == 0 and (i > 1 or bottleneck)
            if needs_down:
                names.add(f"{pre}downsample.0.weight")
                names |= {f"{pre}downsample.1.{p}" for p in bn}
    return names


@pytest.fixture(scope="module")
def resnet101() -> ResNetEncoder:
    torch.manual_seed(0)
    return ResNetEncoder("resnet101").eval()


def test_resnet101_names_stride_and_size(resnet101: ResNetEncoder) -> None:
    keys = set(resnet101.state_dict())
    trunk = {k.removeprefix("backbone.") for k in keys if k.startswith("backbone.")}
    assert trunk == _torchvision_names((3, 4, 23, 3), bottleneck=True)
    assert keys - {f"backbone.{k}" for k in trunk} == {"projection.weight"}
    # torchvision's resnet101 has 44,549,160 parameters, 2,049,000 of them in the fc layer.
    assert sum(p.numel() for p in resnet101.backbone.parameters()) == 44_549_160 - 2_049_000
    proj = resnet101.projection
    assert (proj.in_channels, proj.out_channels, proj.bias) == (2048, 256, None)
    # layer3/layer4 trade stride for dilation 2 and 4; their first blocks keep the previous one.
    b = resnet101.backbone
    assert b.layer3[0].conv2.stride == (1, 1) and b.layer3[0].conv2.dilation == (1, 1)
    assert b.layer3[1].conv2.dilation == (2, 2) and b.layer4[0].conv2.dilation == (2, 2)
    assert b.layer4[2].conv2.dilation == (4, 4)
    with torch.no_grad():
        y = resnet101(torch.randn(1, 1, 24, 32))
    assert y.shape == (1, 256, 3, 4)
    assert resnet101.stride == 8 and resnet101.out_channels == 256


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_basic_block_names_match_torchvision(name: str) -> None:
    blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[name]
    enc = ResNetEncoder(name)
    trunk = set(enc.backbone.state_dict())
    assert trunk == _torchvision_names(blocks, bottleneck=False)
    assert enc.projection.in_channels == 512


@pytest.mark.parametrize("name", LIGHT)
def test_light_resnets_shape_norm_and_rebuild(name: str) -> None:
    torch.manual_seed(1)
    enc = build_encoder(name).eval()
    x = torch.randn(2, 1, 64, 72)
    with torch.no_grad():
        y = enc(x)
    assert y.shape == (2, 256, 8, 9) == (2, enc.out_channels, *enc.output_size(64, 72))
    assert torch.allclose(y.norm(dim=1), torch.ones(2, 8, 9), atol=1e-5)
    # odd sizes round up, like the strided convolutions do
    with torch.no_grad():
        assert enc(torch.randn(1, 1, 65, 63)).shape[-2:] == (9, 8)
    again = build_encoder(enc.config()).eval()
    again.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert torch.allclose(again(x), y, atol=1e-6)


def test_resnet18_l3_is_truncated_and_much_smaller() -> None:
    small, full = ResNetEncoder("resnet18-l3"), ResNetEncoder("resnet18")
    assert not hasattr(small.backbone, "layer4")
    assert small.backbone.layer3[1].conv2.dilation == (2, 2)
    n_small = sum(p.numel() for p in small.parameters())
    n_full = sum(p.numel() for p in full.parameters())
    assert n_small * 3 < n_full


def test_every_encoder_name_builds_and_round_trips_config() -> None:
    for name in ENCODER_NAMES:
        if name == "resnet101":
            continue  # built once in its own test
        enc = build_encoder(name)
        assert enc.name == name
        cfg = enc.config()
        assert build_encoder(cfg).config() == cfg
        assert json.loads(json.dumps(cfg)) == cfg  # plain, JSON-safe builtins
    with pytest.raises(ValueError, match="known encoders"):
        build_encoder("vgg16")
    with pytest.raises(ValueError):
        build_encoder({"out_channels": 3})


def test_forward_rejects_wrong_input_shape() -> None:
    enc = build_encoder("resnet18-l3")
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        enc(torch.randn(1, 3, 32, 32))


def _fake_torchvision_file(tmp_path, name: str, seed: int = 0):
    """A state dict in torchvision's layout (trunk names + fc), random values, saved to disk."""
    g = torch.Generator().manual_seed(seed)
    trunk = ResNetEncoder(name).backbone.state_dict()
    state = {
        k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
        for k, v in trunk.items()
    }
    width = 2048 if name in ("resnet50", "resnet101") else 512
    state["fc.weight"] = torch.randn(1000, width, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    path = tmp_path / f"{name}-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_load_imagenet_weights(tmp_path) -> None:
    path, state = _fake_torchvision_file(tmp_path, "resnet18")
    enc = ResNetEncoder("resnet18")
    report = load_imagenet_weights(enc, path)
    assert report.missing == () and report.unexpected == ()
    own = enc.backbone.state_dict()
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert len(report.loaded) == len(own)
    # the truncated trunk takes what it has and reports the stage it lacks
    small = ResNetEncoder("resnet18-l3")
    rep = load_imagenet_weights(small, path)
    assert rep.missing == ()
    assert rep.unexpected and all(k.startswith("layer4.") for k in rep.unexpected)
    assert torch.equal(small.backbone.conv1.weight, state["conv1.weight"])


def test_load_imagenet_weights_refuses_wrong_files(tmp_path) -> None:
    path, _ = _fake_torchvision_file(tmp_path, "resnet50")
    with pytest.raises(ValueError, match="shape"):
        load_imagenet_weights(ResNetEncoder("resnet18"), path)
    with pytest.raises(ValueError, match="not found"):
        load_imagenet_weights(ResNetEncoder("resnet18"), tmp_path / "nope.pth")
    unrelated = tmp_path / "other.pth"
    torch.save({"encoder.w": torch.zeros(3)}, unrelated)
    with pytest.raises(ValueError, match="no parameter names"):
        load_imagenet_weights(ResNetEncoder("resnet18"), unrelated)


@pytest.mark.parametrize("name", LIGHT)
def test_bf16_and_channels_last_stay_within_tolerance(name: str) -> None:
    torch.manual_seed(2)
    enc = build_encoder(name).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = enc(x)
        enc.set_runtime(channels_last=True)
        cl = enc(x)
        enc.set_runtime(bf16=True, channels_last=True)
        low = enc(x)
        enc.set_runtime()
        back = enc(x)
    assert torch.allclose(cl, ref, atol=1e-4)
    assert low.dtype == torch.float32
    cos = (low * ref).sum(1)
    assert cos.min() > 0.97 and cos.mean() > 0.99
    assert torch.allclose(back, ref, atol=1e-5)


# ------------------------------------------------------------------------------ filter bank
def _two_disc_slice(
    size: int = 96, shift: tuple[int, int] = (0, 0), noise: float = 0.02
) -> torch.Tensor:
    """A body (ellipse) with a bright and a dark disc, on air; values like a z-scored CT."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size / 2 + shift[0], size / 2 + shift[1]
    img = np.full((size, size), -0.8, np.float32)
    body = ((yy - cy) / 30) ** 2 + ((xx - cx) / 40) ** 2 < 1
    img[body] = 0.3
    img[(yy - cy) ** 2 + (xx - cx + 18) ** 2 < 81] = 1.2
    img[(yy - cy) ** 2 + (xx - cx - 18) ** 2 < 81] = -0.2
    rng = np.random.default_rng(0)
    img += rng.normal(0, noise, img.shape).astype(np.float32) * body
    return torch.from_numpy(img)[None, None]


def test_filterbank_shape_norm_and_no_parameters() -> None:
    enc = FilterBankEncoder()
    assert list(enc.parameters()) == []
    x = _two_disc_slice()
    y = enc(torch.cat([x, x.flip(-1)]))
    assert y.shape == (2, enc.out_channels, 24, 24)
    assert torch.allclose(y.norm(dim=1), torch.ones(2, 24, 24), atol=1e-5)
    assert enc(torch.randn(1, 1, 50, 37)).shape[-2:] == enc.output_size(50, 37) == (13, 10)
    with pytest.raises(ValueError, match="unknown filter-bank groups"):
        FilterBankEncoder(groups=["intensity", "sift"])


def test_filterbank_config_defines_it_and_batches_do_not_interact() -> None:
    enc = FilterBankEncoder(stride=4, group_weights={"position": 3.0})
    again = build_encoder(enc.config())
    a, b = _two_disc_slice(), _two_disc_slice(shift=(5, -7))
    alone = enc(a)
    together = again(torch.cat([b, a, b]))
    assert torch.allclose(together[1:2], alone, atol=1e-5)
    assert again.config() == enc.config()


def test_filterbank_separates_what_differs_and_position_follows_the_body() -> None:
    enc = FilterBankEncoder(stride=4)
    y = enc(_two_disc_slice(noise=0))[0]  # (C, 24, 24); disc centres x = 48 -/+ 18: cols 7, 16

    def d2(p, q):
        return float(2 * (1 - (y[:, p[0], p[1]] * y[:, q[0], q[1]]).sum()))

    inside = d2((12, 7), (13, 7))
    across = d2((12, 7), (12, 16))
    assert across > 10 * inside
    # shifting the whole body by a multiple of the stride shifts the features with it
    a = enc(_two_disc_slice(128, noise=0))[0]
    b = enc(_two_disc_slice(128, shift=(8, 12), noise=0))[0]
    assert torch.allclose(b[:, 10:26, 11:29], a[:, 8:24, 8:26], atol=1e-4)
    # ... whereas image-frame coordinates do not follow it
    img = FilterBankEncoder(stride=4, position_frame="image")
    a = img(_two_disc_slice(128, noise=0))[0]
    b = img(_two_disc_slice(128, shift=(8, 12), noise=0))[0]
    assert not torch.allclose(b[:, 10:26, 11:29], a[:, 8:24, 8:26], atol=1e-2)


def test_filterbank_ignores_bf16_autocast() -> None:
    enc = FilterBankEncoder()
    x = _two_disc_slice()
    ref = enc(x)
    enc.set_runtime(bf16=True, channels_last=True)
    assert torch.allclose(enc(x), ref, atol=1e-5)


def test_body_boxes_pick_the_largest_component() -> None:
    m = np.zeros((2, 20, 30), bool)
    m[0, 5:15, 8:25] = True
    m[0, 0:2, 0:3] = True  # a small stray blob (the table, an arm) is ignored
    boxes = body_boxes(m)
    assert boxes[0].tolist() == [5, 14, 8, 24]
    assert boxes[1].tolist() == [0, 19, 0, 29]  # empty slice: the whole image


def test_filterbank_groups_can_be_selected() -> None:
    for g in GROUPS:
        enc = FilterBankEncoder(groups=[g])
        y = enc(_two_disc_slice())
        assert y.shape[1] == enc.out_channels > 1


def _one_slice_dice(enc, image: np.ndarray, truth: np.ndarray) -> float:
    """Middle labelled slice as support, self-calibrated threshold, 3-D Dice (no connectivity)."""
    zs = np.flatnonzero(truth.any((1, 2)))
    z = int(zs[len(zs) // 2])
    with torch.no_grad():
        f = enc(torch.from_numpy(image)[:, None].float())
    size = image.shape[-2:]
    paint = torch.from_numpy(truth[z]).float()
    up = F.interpolate(f[z : z + 1], size=size, mode="bilinear", align_corners=False)[0]
    proto = F.normalize((up * paint).sum((1, 2)) / paint.sum(), dim=0)
    cos = torch.einsum("zchw,c->zhw", f, proto)
    d2 = F.interpolate((2 - 2 * cos)[:, None], size=size, mode="bilinear", align_corners=False)
    d2 = d2[:, 0]
    thr = torch.kthvalue(d2[z].flatten(), int(paint.sum())).values
    pred = (d2 <= thr).numpy()
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


def test_filterbank_segments_the_phantom_liver() -> None:
    from napari_tpm.phantom import make_phantom
    from napari_tpm.preprocess import normalise_intensity

    ph = make_phantom((12, 96, 96), seed=3, spacing=(6.0, 2.5, 2.5))
    image = normalise_intensity(ph.image, modality="ct")
    dice = _one_slice_dice(FilterBankEncoder(), image, ph.labels == 5)
    assert dice > 0.6


@pytest.mark.realdata
def test_filterbank_on_real_ct(shared_data) -> None:
    import SimpleITK as sitk

    from napari_tpm.preprocess import WorkingGrid, normalise_intensity

    folder = shared_data / "amos_slabs"
    img = sitk.ReadImage(str(folder / "amos_0013_slab_ct.nii.gz"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "amos_0013_slab_label.nii.gz")))
    arr = normalise_intensity(sitk.GetArrayFromImage(img), modality="ct")
    grid = WorkingGrid.fit(arr.shape[1:], img.GetSpacing()[1::-1], size=256)
    x = grid.to_working(torch.from_numpy(arr)[:, None], pad_value=float(arr.min()))[:, 0].numpy()
    y = np.stack([grid.to_working_mask(s) for s in lab])
    organs = (6, 2, 3)  # AMOS liver, right and left kidney
    default = np.mean([_one_slice_dice(FilterBankEncoder(), x, y == v) for v in organs])
    local_groups = ["intensity", "gradient", "hessian", "std"]
    local = FilterBankEncoder(
        scales=[1, 2, 4], groups=local_groups, group_weights=dict.fromkeys(local_groups, 1.0)
    )
    local_only = np.mean([_one_slice_dice(local, x, y == v) for v in organs])
    # context and body position are what make a training-free bank usable for TPM
    assert default > 0.6
    assert default > local_only + 0.2
