"""Tables of the accuracy benchmark: markdown section, stdout summary and per-case CSV.

Means are over every (case, organ) Dice of a cell, so a set's mean weighs organs by how many
cases show them; n/a rows (a support the session refused) are left out of the means and
counted separately.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import accuracy_cases as ac
import numpy as np

MODE_ORDER = (
    "same",
    "same-2sl",
    "same-3sl",
    "same-lo",
    "same-hi",
    "same-m2",
    "same-m1",
    "same-p1",
    "same-p2",
    "same-grown",
    "same-shrunk",
    "same-jitter",
    "same-cor",
    "same-sag",
    "cross",
    "cross-2sl",
    "cross-3sl",
    "multi",
    "alone",
    "cross-multi",
)
ORGAN_TITLES = {"liver": "liver", "rkidney": "R kid", "lkidney": "L kid", "spleen": "spleen"} | {
    o: o if o != "ivc" else "IVC" for o in ac.OTHER_ORGANS
}


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _group_key(row: dict) -> tuple[str, str]:
    return (row["set"], row["split"])


def _ordered_groups(rows: list[dict]) -> list[tuple[str, str]]:
    groups = {_group_key(r) for r in rows}
    return sorted(groups, key=lambda g: (ac.SETS.index(g[0]), g[1] != "tune"))


def _modes(rows: list[dict]) -> list[str]:
    present = {r["mode"] for r in rows}
    # modes outside the fixed order (``same-atNN`` of ``--ends-at``) follow it, in name order
    return [m for m in MODE_ORDER if m in present] + sorted(present - set(MODE_ORDER))


def organ_table(rows: list[dict]) -> list[str]:
    """Per set x split x mode: per-organ TPM | RF means, and the mean over all organs."""
    organs = [o for o in ac.ALL_ORGANS if any(r["organ"] == o for r in rows)]
    head = ["set", "split", "mode", "cases"]
    for o in organs:
        head += [f"{ORGAN_TITLES[o]} TPM", "RF"]
    head += ["**mean TPM**", "**mean RF**"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in _ordered_groups(rows):
        for mode in _modes(rows):
            cell = [r for r in rows if _group_key(r) == group and r["mode"] == mode]
            if not cell:
                continue
            line = [group[0], group[1], mode, str(len({r["case"] for r in cell}))]
            for o in organs:
                sel = [r for r in cell if r["organ"] == o]
                line += [
                    _fmt(_mean([r["tpm"] for r in sel])),
                    _fmt(_mean([r["forest"] for r in sel])),
                ]
            line += [
                f"**{_fmt(_mean([r['tpm'] for r in cell]))}**",
                f"**{_fmt(_mean([r['forest'] for r in cell]))}**",
            ]
            lines.append("| " + " | ".join(line) + " |")
    return lines


def set_table(rows: list[dict]) -> list[str]:
    """Mean Dice per set x split, one TPM / RF column pair per mode."""
    modes = _modes(rows)
    head = ["set", "split"] + [f"{m} TPM / RF" for m in modes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in _ordered_groups(rows):
        line = list(group)
        for mode in modes:
            cell = [r for r in rows if _group_key(r) == group and r["mode"] == mode]
            t, f = _mean([r["tpm"] for r in cell]), _mean([r["forest"] for r in cell])
            line.append(f"{_fmt(t)} / {_fmt(f)}" if cell else "")
        lines.append("| " + " | ".join(line) + " |")
    return lines


def below_forest(rows: list[dict]) -> list[str]:
    """Cells (set, split, mode, organ) whose TPM mean is below the forest's by > 0.0005."""
    out = []
    for group in _ordered_groups(rows):
        for mode in _modes(rows):
            for organ in ac.ALL_ORGANS:
                cell = [
                    r
                    for r in rows
                    if _group_key(r) == group and r["mode"] == mode and r["organ"] == organ
                ]
                t, f = _mean([r["tpm"] for r in cell]), _mean([r["forest"] for r in cell])
                if t is not None and f is not None and t < f - 0.0005:
                    out.append(f"{group[0]} {group[1]} {mode} {organ}: TPM {t:.3f} < RF {f:.3f}")
    return out


def summary(rows: list[dict]) -> str:
    """The compact table printed at the end of a run."""
    return "\n".join(["", "mean Dice, TPM / RF:", *set_table(rows)])


def _commit() -> str:
    root = ac.ROOT

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "napari_tpm")
    return sha + (" + uncommitted changes in napari_tpm/" if dirty else "")


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {gpu}, torch "
        f"{torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"Python {platform.python_version()}"
    )


def report(rows: list[dict], args, times: dict, cfg) -> str:
    """The markdown section appended to RESULTS-accuracy.md for one run."""
    n_na = sum(1 for r in rows if r["tpm"] is None and "tpm" in args.methods)
    opts = " ".join(args.session_opt) or "none"
    cases = sorted({r["case"] for r in rows})
    lines = [
        "",
        f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        + (args.measured or f"commit {_commit()}")
        + (f": {args.label}" if args.label else ""),
        "",
        f"- machine: {_machine()}",
        f"- split `{args.split}`, {len(cases)} cases, sets {' '.join(args.sets)}; modes "
        f"{' '.join(args.modes)}; same-scan slice counts {' '.join(map(str, args.slices))}; "
        f"cross slice counts {' '.join(map(str, args.cross_slices))}; "
        f"organs {' '.join(args.organs)}"
        + ("; cross partners: every other volume of the group" if args.partners == "all" else ""),
        f"- TPM: model `{args.model}`, auto prior, session options: {opts}; "
        f"{times['tpm']:.0f} s in all ({times['tpm'] / max(len(cases), 1):.1f} s per case, "
        "encoding included)",
        f"- RF: {cfg.n_estimators} trees, sigmas {cfg.sigma_min:g}-{cfg.sigma_max:g} px, "
        f"<= {cfg.per_class} training pixels per class (2x for background), predicted every "
        f"{cfg.stride}. pixel in y and x; cache key {cfg.key()}; {times['forest']:.0f} s computed "
        "this run (0 = all from cache)",
        f"- wall time {times['total']:.0f} s; n/a (session refused the support): {n_na} rows",
        "",
        "Mean Dice per set (TPM / RF):",
        "",
        *set_table(rows),
        "",
        "Per organ (TPM | RF):",
        "",
        *organ_table(rows),
        "",
        "Cells where TPM is below the forest by more than 0.0005 (issue 10's target: none):",
        "",
        *[f"- {line}" for line in below_forest(rows) or ["none"]],
        "",
    ]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str | Path) -> None:
    """One row per (case, mode, organ): the two Dice values (empty = not run or n/a) and, for
    another volume's paint, TPM's fit score (``SegmentationSession.fit_scores``)."""
    fields = ["case", "set", "split", "mode", "organ", "support", "slices", "tpm", "forest", "fit"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    **{k: r[k] for k in fields[:7]},
                    "tpm": "" if r["tpm"] is None else f"{r['tpm']:.4f}",
                    "forest": "" if r["forest"] is None else f"{r['forest']:.4f}",
                    "fit": "" if r.get("fit") is None else f"{r['fit']:.4f}",
                }
            )
