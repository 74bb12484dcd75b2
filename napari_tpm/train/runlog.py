"""The run's CSV loss log and its PNG plot.

The CSV is the ground truth of a run: one row per step, appended as training goes and cut back
to the checkpoint's step on resume, so a killed-and-resumed run has every step exactly once.

A kill or a full disk can cut the last row short, and a person may edit the file, so reading
keeps only complete rows whose step is a whole number and whose values are numbers; anything
else is dropped (and gone after the next ``truncate``) instead of stopping the run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOG_FIELDS: tuple[str, ...] = (
    "step",
    "loss",
    "seg",
    "align",
    "t_loss",
    "lr",
    "t_d",
    "idt_ema",
    "sigma_f",
    "sigma_b",
    "seconds",
)


class CsvLog:
    """Append-only CSV of per-step records; ``truncate(step)`` drops rows after ``step``."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str] = LOG_FIELDS) -> None:
        self.path = Path(path)
        self.fields = tuple(fields)
        self._fh = None
        self._writer: Any = None

    def truncate(self, step: int, last: dict[str, Any] | None = None) -> None:
        """Keep only rows with ``step <= step`` (rows a killed run wrote after its checkpoint).

        ``last`` is the checkpoint's own record of ``step``: it restores that row when a kill
        or a full disk cut it short, so the log keeps every step exactly once.
        """
        from napari_tpm.atomic import atomic_output

        if not self.path.is_file():
            return
        rows = read_log(self.path)
        with atomic_output(self.path) as tmp, open(tmp / self.path.name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            kept = [row for row in rows if int(row["step"]) <= step]
            for row in kept:
                w.writerow(row)
            if last and step > 0 and not any(int(row["step"]) == step for row in kept):
                w.writerow({k: _fmt(v) for k, v in {**last, "step": step}.items()})

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", newline="")  # noqa: SIM115 - kept open across steps
            self._writer = csv.DictWriter(self._fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow({k: _fmt(record.get(k, "")) for k in self.fields})

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The complete, well-formed rows of a loss log (see the module docstring), in order."""
    with open(path, newline="", errors="replace") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by a kill or a full disk
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    if "step" not in fields:
        return []
    rows = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            continue  # too many or too few values
        if _whole_number(row["step"]) and all(_number_or_empty(v) for v in row.values()):
            rows.append({k: str(int(float(row[k]))) if k == "step" else v for k, v in row.items()})
    return rows


def _whole_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value.is_integer()


def _number_or_empty(text: str) -> bool:
    if text == "":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_losses(log_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Loss curves (raw and smoothed), the learning rate and the thresholds, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        raise ValueError(f"{log_path} holds no rows")

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])

    step = col("step")
    window = max(1, len(rows) // 50)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in ("loss", "seg", "align"):
        y = col(name)
        axes[0].plot(step, y, alpha=0.2)
        if window > 1 and len(y) >= window:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            axes[0].plot(step[window - 1 :], smooth, label=f"{name} (mean of {window})")
        else:
            axes[0].plot(step, y, label=name)
    axes[0].set_xlabel("step")
    axes[0].set_title("losses")
    axes[0].legend()
    axes[1].plot(step, col("lr"))
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("step")
    axes[2].plot(step, col("t_d"), label="T_D (learned)")
    axes[2].plot(step, col("idt_ema"), label="ideal threshold (EMA)")
    axes[2].set_title("distance thresholds")
    axes[2].set_xlabel("step")
    axes[2].legend()
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
