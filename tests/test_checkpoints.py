"""Checkpoints: round trip, fp16 storage, atomic writes, refusal of pickles, zoo and defaults."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

import napari_tpm.checkpoints as ckpt
import napari_tpm.zoo as zoo_registry
from napari_tpm.checkpoints import (
    CheckpointError,
    TPMModel,
    list_models,
    load_model,
    save_model,
    sigmas_from_threshold,
)
from napari_tpm.encoders import build_encoder


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """An empty model folder standing in for the package's ``models/``."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    monkeypatch.setattr(zoo_registry, "model_dir", lambda: folder)
    return folder


def _model(seed: int = 0) -> TPMModel:
    torch.manual_seed(seed)
    enc = build_encoder("resnet18-l3").eval()
    # non-trivial BatchNorm statistics, so buffers are checked too
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return TPMModel(
        enc,
        t_d=0.83,
        sigma_f=0.29,
        sigma_b=12.5,
        estimators={"sp": {"kind": "AvgEst", "prior": np.float64(0.031)}, "mp": {}},
        card={"data": "phantom"},
        name="tiny",
        calibrated=True,
    )


def test_sigmas_match_the_method_digest() -> None:
    sf, sb = sigmas_from_threshold(20.0, 1.0)  # T = -10: sigma_F ~ 0.3162, sigma_B ~ 46.93
    assert sf == pytest.approx(0.3162, abs=1e-4)
    assert sb == pytest.approx(46.93, abs=1e-2)
    # and the P = 0.5 boundary of the tied model (prior 0.5, d = 1) sits at D2 = t_d^2
    for alpha, t_d in ((20.0, 1.0), (113.0, 0.42), (20.0, 0.6)):
        sf, sb = sigmas_from_threshold(alpha, t_d)
        log_odds = math.log(sb / sf) - (t_d**2 / 2) * (1 / sf**2 - 1 / sb**2)
        assert abs(log_odds) < 1e-6
    m = TPMModel(build_encoder("filterbank"), alpha=20.0, t_d=1.0)
    assert (m.sigma_f, m.sigma_b) == sigmas_from_threshold(20.0, 1.0)


def test_round_trip(tmp_path) -> None:
    model = _model()
    path = save_model(model, tmp_path / "tiny.pt", card={"notes": "round trip"})
    back = load_model(path)
    assert back.encoder.config() == model.encoder.config()
    a, b = model.encoder.state_dict(), back.encoder.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (back.alpha, back.t_d, back.sigma_f, back.sigma_b) == (20.0, 0.83, 0.29, 12.5)
    assert back.calibrated is True and back.name == "tiny"
    assert back.estimators["sp"]["prior"] == pytest.approx(0.031)
    assert back.card == {"data": "phantom", "notes": "round trip"}
    assert not back.encoder.training
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(back.encoder(x), model.encoder(x), atol=1e-6)
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["encoder"]["name"] == "resnet18-l3" and card["t_d"] == 0.83
    assert card["card"]["notes"] == "round trip" and card["estimators"] == ["mp", "sp"]


def test_fp16_storage(tmp_path) -> None:
    model = _model(1)
    full = save_model(model, tmp_path / "full.pt")
    half = save_model(model, tmp_path / "half.pt", half=True)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    back = load_model(half)
    for k, v in model.encoder.state_dict().items():
        w = back.encoder.state_dict()[k]
        assert w.dtype == v.dtype
        if v.is_floating_point():
            assert torch.allclose(w, v, rtol=1e-3, atol=1e-4), k
        else:
            assert torch.equal(w, v)
    assert json.loads((tmp_path / "half.json").read_text())["weights_dtype"] == "float16"


def test_save_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.pt"
    save_model(_model(0), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(1), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pt"]  # no temp files
    with pytest.raises(OSError):
        save_model(_model(1), tmp_path / "new.pt")
    assert not (tmp_path / "new.pt").exists()


def test_unsaveable_metadata_is_refused_before_writing(tmp_path) -> None:
    model = _model()
    model.estimators = {"sp": object()}
    with pytest.raises(CheckpointError, match="estimators"):
        save_model(model, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


class _Exploit:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_malicious_pickle_is_refused(tmp_path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "state_dict": {}, "x": _Exploit(sentinel)}, path)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path)
    assert not sentinel.exists()


def test_errors_are_clear(tmp_path, zoo) -> None:
    with pytest.raises(CheckpointError, match="unknown model 'nosuch'"):
        load_model("nosuch")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a napari-tpm/1 checkpoint"):
        load_model(other)
    # weights that do not fit the stored architecture
    path = save_model(_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["encoder_config"] = {"name": "resnet18", "out_channels": 256}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)
    payload["encoder_config"] = {"name": "alexnet"}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        load_model(path)
    assert issubclass(CheckpointError, ValueError)


def test_filterbank_needs_no_files(zoo) -> None:
    assert list_models() == ["filterbank"]
    for name in ("filterbank", "default"):
        m = load_model(name)
        assert m.name == "filterbank" and m.calibrated is False
        assert m.encoder.config() == build_encoder("filterbank").config()
        assert (m.sigma_f, m.sigma_b) == sigmas_from_threshold(m.alpha, m.t_d)
        assert m.sigma_f < m.t_d < m.sigma_b
    assert list(zoo.iterdir()) == []


def test_zoo_names_and_default(zoo) -> None:
    save_model(_model(), zoo / "tiny.pt")
    save_model(_model(2), zoo / "another.pt")
    assert list_models() == ["filterbank", "another", "tiny"]  # the default first
    assert load_model("tiny").name == "tiny"
    assert load_model("default").name == "filterbank"  # no default.json
    (zoo / "default.json").write_text('{"ct": "tiny", "mr": "tiny"}\n')
    assert list_models()[0] == "tiny"
    m = load_model("default")
    assert m.name == "tiny" and m.calibrated
    (zoo / "default.json").write_text('{"ct": "gone", "mr": "gone"}\n')
    with pytest.raises(CheckpointError, match="unknown model 'gone'"):
        load_model("default")


def test_filterbank_model_round_trips_through_a_file(tmp_path) -> None:
    m = load_model("filterbank")
    path = save_model(m, tmp_path / "fb.pt")
    back = load_model(path)
    assert back.encoder.config() == m.encoder.config()
    assert back.calibrated is False and back.t_d == m.t_d
