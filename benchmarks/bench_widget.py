"""Latency of the napari widget on a CT-sized volume (CPU), written to RESULTS-widget.md.

What a user feels, measured through the real widget in a real viewer (run it under Xvfb):

* click -> full result: "Segment volume" pressed until the last slice is in the preview layer
  (first run: every slice goes through the encoder), and the time to the first preview slices;
* re-segment with cached features (what Auto-update does after a new stroke);
* class-prior slider: value change -> preview layer rewritten and refreshed (GUI thread);
* slider at rest: the relabel with the 3D steps (a worker thread) until its result is in the
  layer, and the longest GUI-thread stall meanwhile;
* prototypes spin box: value change -> refit from cached features -> preview updated, with the
  manual prior and with "Auto" ticked.

Usage (from the repository root)::

    xvfb-run -a env QT_QPA_PLATFORM=offscreen python benchmarks/bench_widget.py
    xvfb-run -a env QT_QPA_PLATFORM=offscreen python benchmarks/bench_widget.py \\
        --shape 24 96 96 --model filterbank --out /tmp/r.md          # a quick smoke run
    ... bench_widget.py --screenshot docs/screenshot.png --shape 60 256 256   # the docs picture
    ... bench_widget.py --screenshots docs/          # the dock's main states, for the docs
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

    A stall is the time one pass of this loop takes beyond its 2 ms nap: the work the widget
    does on the GUI thread (writing preview slices, relabelling) while the worker runs, plus
    any wait for the GIL a worker holds, i.e. how long the viewer would not respond to the
    mouse.
    """
    end = time.perf_counter() + timeout
    stall = 0.0
    nap = 0.002
    while not predicate():
        t = time.perf_counter()
        app.processEvents()
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        time.sleep(nap)
        stall = max(stall, time.perf_counter() - t - nap)
    return stall


def _settle(app, n: int = 10) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.05)


def _shoot(viewer, app, path: Path, widget=None) -> None:
    if widget is not None:  # show the dock from its first row
        widget.ui.scroll.verticalScrollBar().setValue(0)
    _settle(app)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"screenshot -> {path}")


def take_screenshots(folder: Path, shape: tuple[int, int, int] = (60, 256, 256)) -> int:
    """The dock's main states as PNGs in ``folder`` (look at them: they are the docs' figures).

    segmented (liver painted on one slice, "connected" ticked), corrected (a background stroke
    on another slice, re-segmented from cached features), cancelled (Apply refuses the partial
    preview), and a flipped NIfTI CT drawn over its DICOM series when ../shared is present.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_tpm._sample_data import make_phantom_sample

    folder.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    (image, kwargs, _), (labels, lkw, _) = make_phantom_sample(shape=shape, seed=1)
    viewer.add_image(image, **kwargs)
    truth = viewer.add_labels(labels, **lkw)
    _, widget = viewer.window.add_plugin_dock_widget("napari-tpm", "TPM Segmentation")
    widget.device_combo.value = "cpu"
    support = widget.new_support_layer()
    z = int(np.argmax((labels == LIVER).sum(axis=(1, 2))))
    support.data[z][labels[z] == LIVER] = LIVER
    support.refresh()
    viewer.dims.set_current_step(0, z - shape[0] // 8)
    widget.connected_checkbox.value = True
    widget.segment()
    _wait(app, lambda: not widget.running)
    viewer.reset_view()
    _shoot(viewer, app, folder / "widget-segmented.png", widget)

    # a correction: background stroke across the liver on another slice, Auto-update
    zc = z - shape[0] // 8
    ys, xs = np.nonzero(widget.result_layer.data[zc] == LIVER)
    widget.background_button.native.click()
    if ys.size:
        support.data[zc, ys.min() : ys.min() + 8, xs.min() : xs.max()] = 255
        support.refresh()
    widget.auto_update_checkbox.value = True
    support.events.paint(value=[])
    _wait(app, lambda: widget.running, timeout=10)
    _wait(app, lambda: not widget.running)
    _shoot(viewer, app, folder / "widget-corrected.png", widget)
    widget.auto_update_checkbox.value = False

    # cancelled: slow the run down so that Cancel lands half-way
    from napari_tpm.session import SegmentationSession

    original = SegmentationSession.segment

    def slow(self, *a, **k):
        for step in original(self, *a, **k):
            time.sleep(0.3)
            yield step

    SegmentationSession.segment = slow
    widget.segment()
    _wait(app, lambda: widget.state.run is not None and widget.state.run.done > 0, timeout=120)
    widget.cancel()
    _wait(app, lambda: not widget.running)
    SegmentationSession.segment = original
    widget.apply_button.native.click()
    _shoot(viewer, app, folder / "widget-cancelled.png", widget)
    truth.visible = False

    shared = HERE.parents[1] / "shared" / "data" / "totalsegmentator"
    if shared.is_dir():
        from napari_tpm._reader import read_layers

        viewer.layers.clear()
        for path in (shared / "dicom_ct_series", shared / "ts_dicom_ct.nii.gz"):
            for data, kw, kind in read_layers(str(path)):
                viewer._add_layer_from_data(data, kw, kind)
        viewer.layers["ts_dicom_ct"].colormap = "magenta"
        viewer.layers["ts_dicom_ct"].blending = "additive"
        viewer.layers["dicom_ct_series"].colormap = "green"
        viewer.dims.set_current_step(0, 10)
        viewer.reset_view()
        _shoot(viewer, app, folder / "widget-ct-nifti-over-dicom.png")
    viewer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(150, 512, 512), help="z y x")
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 0.7, 0.7), help="mm")
    parser.add_argument("--model", default=None, help="default: the widget's default model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15, help="slider moves to time")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-widget.md")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window as PNG")
    parser.add_argument(
        "--screenshots", type=Path, default=None, help="only save the main states into DIR"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.screenshots is not None:
        return take_screenshots(args.screenshots)

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

    _wait(app, lambda: not widget.running)  # the relabel the last move scheduled

    # what follows when the slider rests: the 3D steps and the per-label volumes, in a worker
    # (before 2026-12-02 16:00 UTC on the GUI thread, where ``relabel()`` returned only when
    # done); timed until the result is in the layer, and the longest GUI stall meanwhile
    widget.connected_checkbox.value = True
    _wait(app, lambda: not widget.running)
    full: list[float] = []
    rest_stall: list[float] = []
    for v in values[:5]:
        with widget.prior_slider.changed.blocked():
            widget.prior_slider.value = float(v)
        t0 = time.perf_counter()
        widget.controller.relabel()
        call = time.perf_counter() - t0
        stall_rest = _wait(app, lambda: not widget.running)
        full.append(time.perf_counter() - t0)
        rest_stall.append(max(call, stall_rest))
    widget.connected_checkbox.value = False
    _wait(app, lambda: not widget.running)

    # prototypes: refit from cached features in a worker, relabel when it returns
    protos: dict[int, float] = {}
    if widget.prototypes_spinbox.value != 1:  # start from one prototype (the default is 3)
        widget.prototypes_spinbox.value = 1
        _wait(app, lambda: not widget.running)
    # the displayed slice is written as soon as the refit returns, before the full relabel
    adjust = widget.controller.adjust
    write_displayed = adjust._write_displayed
    shown_at: list[float] = []

    def timed_write(*a, **kw):
        done = write_displayed(*a, **kw)
        shown_at.append(time.perf_counter())
        return done

    adjust._write_displayed = timed_write
    slice_shown: dict[int, float] = {}
    auto_protos: dict[int, float] = {}
    auto_shown: dict[int, float] = {}
    # with the manual prior, then again with "Auto" ticked (its prior is measured on the volume)
    runs = ((False, protos, slice_shown), (True, auto_protos, auto_shown))
    for auto, full_times, shown_times in runs:
        widget.auto_prior_checkbox.value = auto
        _wait(app, lambda: not widget.running)
        for k in (3, 1):
            shown_at.clear()
            t0 = time.perf_counter()
            widget.prototypes_spinbox.value = k
            _wait(app, lambda: not widget.running)
            full_times[k] = time.perf_counter() - t0
            shown_times[k] = shown_at[0] - t0 if shown_at else float("nan")
    widget.auto_prior_checkbox.value = False
    _wait(app, lambda: not widget.running)
    adjust._write_displayed = write_displayed
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
        (
            "slider at rest: relabel with the 3D steps + volume per label, until in the layer "
            "(median)",
            f"{statistics.median(full) * 1000:.0f} ms",
        ),
        (
            "slider at rest: longest GUI-thread stall meanwhile (max of 5)",
            f"{max(rest_stall) * 1000:.0f} ms",
        ),
        ("prototypes 1 -> 3: displayed slice updated", f"{slice_shown[3]:.2f} s"),
        ("prototypes 1 -> 3 (refit + full relabel)", f"{protos[3]:.2f} s"),
        ("prototypes 3 -> 1: displayed slice updated", f"{slice_shown[1]:.2f} s"),
        ("prototypes 3 -> 1 (refit + full relabel)", f"{protos[1]:.2f} s"),
        ("Auto ticked, prototypes 1 -> 3: displayed slice updated", f"{auto_shown[3]:.2f} s"),
        ("Auto ticked, prototypes 1 -> 3 (refit + full relabel)", f"{auto_protos[3]:.2f} s"),
        ("Auto ticked, prototypes 3 -> 1: displayed slice updated", f"{auto_shown[1]:.2f} s"),
        ("Auto ticked, prototypes 3 -> 1 (refit + full relabel)", f"{auto_protos[1]:.2f} s"),
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
