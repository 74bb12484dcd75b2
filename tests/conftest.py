"""Shared fixtures: the real development data under ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for modules of tiny tensors: extra threads only add contention there."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the small real CT/MR volumes; the test is skipped when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every message the dock widget shows with show_error, in order (GUI tests)."""
    from napari_tpm._widget import _controller

    seen: list[str] = []
    monkeypatch.setattr(_controller, "show_error", seen.append)
    return seen


def _have_display() -> bool:
    """True when Qt can open windows: a DISPLAY, or an Xvfb binary for pytest-xvfb to start."""
    return bool(os.environ.get("DISPLAY")) or shutil.which("Xvfb") is not None


if not _have_display():
    # Without any X server Qt's xcb plugin aborts the whole run; offscreen keeps the non-GL tests
    # alive and the napari viewer tests are skipped below with the reason.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_display():
        return
    skip = pytest.mark.skip(reason="napari viewers need an X server: install xvfb (see README)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)
