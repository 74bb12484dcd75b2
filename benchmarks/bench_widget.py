"""Latency of the napari widget on a CT-sized volume (CPU), written to RESULTS-widget.md.

What a user feels, measured through the real widget in a real viewer (run it under Xvfb):

* click -> full result: "Segment volume" pressed until the last slice is in the preview layer
  (first run: every slice goes through the encoder), and the time to the first preview slices;
* re-segment with cached features (what Auto-update does after a new stroke);
* class-prior slider: value change -> preview layer rewritten and refreshed (GUI thread);
* prototypes spin box: value change -> refit from cached features -> preview updated.

Usage (from the repository root)::

    xvfb-run -a env QT_QPA_PLATFORM=offscreen python benchmarks/bench_widget.py
    xvfb-run -a env QT_QPA_PLATFORM=offscreen python benchmarks/bench_widget.py \\
        --shape 24 96 96 --model filterbank --out /tmp/r.md          # a quick smoke run
    ... bench_widget.py --screenshot docs/screenshot.png --shape 60 256 256   # the docs picture
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LIVER = 5


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _wait(app, predicate, timeout: float = 3600.0) -> float:
    """Spin the Qt event loop until ``predicate()`` is true; return the longest GUI stall (s).

    A stall is the time one ``processEvents`` pass takes: the work the widget does on the GUI
    thread (writing preview slices, relabelling) while the worker runs, i.e. how long the
    viewer would not respond to the mouse.
    """
    end = time.perf_counter() + timeout
    stall = 0.0
    while not predicate():
        t = time.perf_counter()
        app.processEvents()
        stall = max(stall, time.perf_counter() - t)
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        time.sleep(0.002)
    return stall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(150, 512, 512), help="z y x")
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 0.7, 0.7), help="mm")
    parser.add_argument("--model", default=None, help="default: the widget's default model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15, help="slider moves to time")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-widget.md")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window as PNG")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_tpm.phantom import make_phantom

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    phantom = make_phantom(shape=tuple(args.shape), spacing=tuple(args.spacing), seed=1)
    t_phantom = time.perf_counter() - t

    viewer = napari.Viewer(show=args.screenshot is not None)
    app = QApplication.instance()
    viewer.add_image(
        phantom.image, name="CT-like phantom", scale=phantom.spacing, contrast_limits=(-160, 240)
    )
    _, widget = viewer.window.add_plugin_dock_widget("napari-tpm", "TPM Segmentation")
    if args.model:
        widget.model_combo.value = args.model
    widget.device_combo.value = "cpu"
    model = widget.model_combo.value
    support = widget.new_support_layer()
    z = int(np.argmax((phantom.labels == LIVER).sum(axis=(1, 2))))
    support.data[z][phantom.labels[z] == LIVER] = LIVER
    support.refresh()
    viewer.dims.set_current_step(0, z)
    app.processEvents()

    # click -> first preview slices -> full result
    first: list[float] = []
    t0 = time.perf_counter()
    widget.segment_button.native.click()
    layer = widget.result_layer

    def done() -> bool:
        if not first and layer.data.any():
            first.append(time.perf_counter() - t0)
        return not widget.running

    stall = _wait(app, done)
    t_full = time.perf_counter() - t0
    session = widget.session
    if session is None or not layer.data.any():
        raise SystemExit("the segmentation failed; see the notifications above")
    calls = session.encoder_calls
    voxels = int(np.count_nonzero(layer.data))
    truth = phantom.labels == LIVER
    pred = layer.data == LIVER
    dice = 2 * np.logical_and(pred, truth).sum() / max(pred.sum() + truth.sum(), 1)

    # re-segment with the features cached (Auto-update after another stroke)
    t0 = time.perf_counter()
    widget.segment_button.native.click()
    _wait(app, lambda: not widget.running)
    t_cached = time.perf_counter() - t0
    assert session.encoder_calls == calls

    # class prior slider: GUI-thread relabel + refresh, then one event-loop pass (the redraw)
    slider: list[float] = []
    values = np.linspace(0.2, 0.8, args.repeats)
    for v in values:
        t0 = time.perf_counter()
        widget.prior_slider.value = float(v)
        app.processEvents()
        slider.append(time.perf_counter() - t0)

    # prototypes: refit from cached features in a worker, relabel when it returns
    protos: dict[int, float] = {}
    for k in (3, 1):
        t0 = time.perf_counter()
        widget.prototypes_spinbox.value = k
        _wait(app, lambda: not widget.running)
        protos[k] = time.perf_counter() - t0
    assert session.encoder_calls == calls

    if args.screenshot is not None:
        widget.prior_slider.value = 0.5
        support.selected_label = LIVER
        viewer.layers.selection.active = support
        # a slice away from the painted one: the structure found where nobody painted
        viewer.dims.set_current_step(0, max(z - args.shape[0] // 6, 0))
        viewer.window._qt_window.resize(1400, 860)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        viewer.reset_view()
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
        print(f"screenshot -> {args.screenshot}")

    shape = "x".join(str(s) for s in args.shape[::-1])
    rows = [
        ("click -> first preview slices", f"{first[0]:.2f} s" if first else "n/a"),
        ("click -> full result (all slices encoded)", f"{t_full:.1f} s"),
        ("longest GUI-thread stall during that run", f"{stall * 1000:.0f} ms"),
        ("re-segment, features cached (Auto-update)", f"{t_cached:.2f} s"),
        (
            "class-prior slider -> layer updated (median / max)",
            f"{statistics.median(slider) * 1000:.0f} ms / {max(slider) * 1000:.0f} ms",
        ),
        ("prototypes 1 -> 3 (refit + relabel)", f"{protos[3]:.2f} s"),
        ("prototypes 3 -> 1 (refit + relabel)", f"{protos[1]:.2f} s"),
    ]
    text = "\n".join(
        [
            "# Widget latency (napari-tpm)",
            "",
            f"Measured with `benchmarks/bench_widget.py` on {datetime.date.today().isoformat()}.",
            "",
            f"- machine: {_cpu_name()}, {os.cpu_count()} cores visible, torch threads "
            f"{torch.get_num_threads()}, no GPU (device `cpu`), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch "
            f"{torch.__version__}, napari {napari.__version__}, under Xvfb",
            f"- volume: CT-like phantom {shape} voxels (x y z), spacing "
            f"{tuple(args.spacing)} mm (z y x), {phantom.image.size / 1e6:.1f} M voxels "
            f"(generated in {t_phantom:.1f} s, not timed below)",
            f"- model: `{model}`; support: the liver painted on slice {z}; "
            f"{calls} slices encoded; preview {voxels:,} voxels, liver Dice {dice:.3f}",
            "",
            "| step | time |",
            "|---|---|",
            *[f"| {a} | {b} |" for a, b in rows],
            "",
            "The slider and the prototypes never call the encoder (encoder calls unchanged).",
            "",
        ]
    )
    args.out.write_text(text)
    print(text)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
