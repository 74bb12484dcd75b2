"""The one device resolver and its three rules: the session's, training's and the budget's.

GPU branches run on a CPU machine by faking ``torch.cuda.is_available`` / ``device_count``
(a ``torch.device("cuda", n)`` is only a name: making one needs no GPU).
"""

from __future__ import annotations

import pytest
import torch

from napari_tpm._session_data import resolve_device as session_device
from napari_tpm.adapt_budget import device_of
from napari_tpm.devices import bf16_autocast_pays, resolve_device
from napari_tpm.session import resolve_device as session_export
from napari_tpm.train.ddp import resolve_device as ddp_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_old_names_still_resolve_through_the_one_function():
    assert session_export is session_device is resolve_device


# --------------------------------------------------------------------- the session's rule


def test_session_rule_without_a_gpu(no_gpu):
    assert session_device() == torch.device("cpu")
    assert session_device("AUTO") == torch.device("cpu")
    assert session_device("cpu") == torch.device("cpu")
    given = torch.device("cuda", 3)
    assert session_device(given) is given  # a torch.device is trusted as it is
    for name in ("cuda", "cuda:1", "CUDA"):
        with pytest.raises(ValueError, match=r"^device 'cuda' was requested but no CUDA GPU"):
            session_device(name)
    with pytest.raises(ValueError, match=r"^device 'mps' was requested but MPS is not available"):
        session_device("mps")
    with pytest.raises(ValueError, match=r"^unknown device 'tpu' \(use auto, cpu or cuda\)$"):
        session_device("tpu")


def test_session_rule_with_gpus(two_gpus):
    assert session_device("auto") == torch.device("cuda")  # no index: the current GPU
    assert session_device("cuda:1") == torch.device("cuda", 1)
    assert session_device("cpu") == torch.device("cpu")


# --------------------------------------------------------------------- training's rule


def test_training_rule_gives_each_local_rank_its_gpu(two_gpus):
    assert ddp_device("auto", 0) == torch.device("cuda", 0)
    assert ddp_device("cuda", 1) == torch.device("cuda", 1)
    assert ddp_device("cuda", 3) == torch.device("cuda", 1)  # ranks wrap around the GPUs
    assert ddp_device("cuda") == torch.device("cuda", 0)
    assert ddp_device("cuda:1", 0) == torch.device("cuda", 1)  # an explicit GPU is kept
    assert ddp_device("cpu", 1) == torch.device("cpu")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)


def test_training_rule_without_a_gpu(no_gpu):
    assert ddp_device("auto", 1) == torch.device("cpu")
    assert ddp_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device cuda was asked for but no CUDA device"):
        ddp_device("cuda", 0)


# --------------------------------------------------------------------- the budget's rule


def test_budget_rule_names_a_gpu_without_having_one(no_gpu):
    assert device_of("cuda") == torch.device("cuda")  # "what would a GPU get"
    assert device_of("cuda:1") == torch.device("cuda", 1)
    assert device_of("auto") == torch.device("cpu")
    assert device_of("mps") == torch.device("mps")
    given = torch.device("cuda", 0)
    assert device_of(given) is given
    assert resolve_device("cuda", check_available=False, local_rank=1) == torch.device("cuda")


def test_budget_rule_with_gpus(two_gpus):
    assert device_of("auto") == torch.device("cuda")


def test_budget_rule_answers_for_both_devices(no_gpu):
    from napari_tpm.adapt_budget import CPU_STEPS, GPU_STEPS, default_steps

    assert default_steps("cuda") == GPU_STEPS and default_steps("auto") == CPU_STEPS


@pytest.mark.parametrize(("kind", "native", "expected"), [
    ("cpu", True, True), ("cpu", False, False),
    ("cuda", True, True), ("cuda", False, False),
    ("mps", True, False),
])  # fmt: skip
def test_bf16_autocast_only_where_the_hardware_has_it(monkeypatch, kind, native, expected):
    """Emulated bf16 trains many times slower than float32, so it is never chosen."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: native, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
    assert bf16_autocast_pays(torch.device(kind)) is expected
