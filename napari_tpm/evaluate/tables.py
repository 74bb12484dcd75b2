"""Tables from evaluation records: Table 1 (binary) and Table 2 (multi-class), Markdown and CSV.

A cell is a Dice in percent, "mean ± std". With several runs the mean of each run is taken over
its query volumes (all folds pooled, as the reference stores per fold x run and averages), and
mean and standard deviation are over the runs. With one run the standard deviation is over the
query volumes (or query/support pairs) instead; the caption says which. Standard deviations are
population ones (ddof = 0). The Mean column is the mean of the organ columns; its spread is
taken over the runs' organ-means, or with one run over the per-volume organ-means.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import organ_title
from .protocols import MAX_RULE, METHODS, PRODUCT

MEAN = "Mean"


@dataclass(frozen=True)
class RowSpec:
    """One table row: which records (model, prototypes, method) it summarises."""

    label: str
    model: str
    method: str
    prototypes: int | None = None


@dataclass
class Cell:
    mean: float
    std: float
    n: int

    def text(self) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"


@dataclass
class Table:
    title: str
    columns: list[str]  # organ keys, then MEAN
    rows: list[RowSpec]
    cells: dict[tuple[str, str], Cell]  # (row label, column) -> cell
    spread: str  # "runs" or "volumes"
    notes: list[str]


def _prototype_word(k: int) -> str:
    return "1 prototype" if k == 1 else f"{k} prototypes"


def table1_rows(records: Sequence[dict[str, Any]], prototypes: Sequence[int]) -> list[RowSpec]:
    """ADNet (when its records exist), then TPM with each prototype count and every prior rule."""
    rows = []
    if any(r["kind"] == "binary" and r["model"] == "ADNet" for r in records):
        rows.append(RowSpec("ADNet (CE-T)", "ADNet", "CE-T", 1))
    product = any(r["kind"] == "binary" and PRODUCT in r["methods"] for r in records)
    for k in prototypes:
        for m in METHODS:
            rows.append(RowSpec(f"TPM, {_prototype_word(k)}, {m}", "TPM", m, k))
        if product:
            label = f"TPM, {_prototype_word(k)}, the product (auto prior, post-processing)"
            rows.append(RowSpec(label, "TPM", PRODUCT, k))
    return rows


def table2_rows(records: Sequence[dict[str, Any]], *, paper: bool = True) -> list[RowSpec]:
    """TPM single- and multi-foreground trained with every rule, then the ADNet++ max rule.

    Outside the paper mode the main checkpoint is whatever the user gave, so its rows are
    called plain "TPM" rather than claiming single-foreground training.
    """
    models = {r["model"] for r in records if r["kind"] == "multiclass"}
    rows = []
    sf = "TPM (SF trained)" if paper else "TPM"
    product = {r["model"] for r in records if r["kind"] == "multiclass" and PRODUCT in r["methods"]}
    for key, name in (("SF", sf), ("MF", "TPM (MF trained)")):
        if key in models:
            rows.extend(RowSpec(f"{name}, {m}", key, m) for m in METHODS)
        if key in product:
            label = f"{name}, the product (its prototypes, auto prior, post-processing)"
            rows.append(RowSpec(label, key, PRODUCT))
    if "ADNet++" in models:
        rows.append(RowSpec("ADNet++ (max rule)", "ADNet++", MAX_RULE))
    return rows


def _values(
    records: Iterable[dict[str, Any]], row: RowSpec, kind: str
) -> dict[int, dict[tuple, dict[str, float]]]:
    """run -> unit (fold, query, support) -> organ -> Dice, for the records of ``row``."""
    out: dict[int, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["kind"] != kind or r["model"] != row.model:
            continue
        if kind == "binary" and r["prototypes"] != row.prototypes:
            continue
        entry = r["methods"].get(row.method)
        if not entry or not entry.get("available", True):
            continue
        unit = (r.get("fold"), r["query"], r["support"])
        if kind == "binary":
            d = entry["dice"]
            if d is not None:
                out[r.get("run", 1)][unit][r["organ"]] = float(d)
        else:
            for organ, d in entry["dice"].items():
                if d is not None:
                    out[r.get("run", 1)][unit][organ] = float(d)
    return out


def _cell(values: list[float]) -> Cell:
    if not values:
        return Cell(math.nan, math.nan, 0)
    a = np.asarray(values, dtype=np.float64)
    return Cell(float(a.mean()), float(a.std()), int(a.size))


def build_table(
    records: Sequence[dict[str, Any]],
    rows: Sequence[RowSpec],
    organs: Sequence[str],
    *,
    kind: str,
    title: str,
    notes: Sequence[str] = (),
) -> Table:
    """Aggregate records into a table with one column per organ and a Mean column."""
    runs = sorted({r.get("run", 1) for r in records if r["kind"] == kind})
    spread = "runs" if len(runs) > 1 else "volumes"
    cells: dict[tuple[str, str], Cell] = {}
    for row in rows:
        by_run = _values(records, row, kind)
        run_means: dict[str, list[float]] = defaultdict(list)
        unit_values: dict[str, list[float]] = defaultdict(list)
        unit_means: list[float] = []
        for run in runs:
            units = by_run.get(run, {})
            organ_means = []
            for organ in organs:
                vals = [u[organ] for u in units.values() if organ in u]
                unit_values[organ].extend(vals)
                if vals:
                    m = float(np.mean(vals))
                    run_means[organ].append(m)
                    organ_means.append(m)
            if len(organ_means) == len(organs):
                run_means[MEAN].append(float(np.mean(organ_means)))
            for u in units.values():
                present = [u[o] for o in organs if o in u]
                if present:
                    unit_means.append(float(np.mean(present)))
        for organ in organs:
            source = run_means[organ] if spread == "runs" else unit_values[organ]
            cells[(row.label, organ)] = _cell(source)
        if spread == "runs":
            cells[(row.label, MEAN)] = _cell(run_means[MEAN])
        else:
            means = [cells[(row.label, o)].mean for o in organs]
            ok = all(math.isfinite(m) for m in means)
            spread_cell = _cell(unit_means)
            cells[(row.label, MEAN)] = Cell(
                float(np.mean(means)) if ok else math.nan, spread_cell.std, spread_cell.n
            )
    return Table(title, [*organs, MEAN], list(rows), cells, spread, list(notes))


def markdown(table: Table) -> str:
    """A Markdown table with a caption line and the notes as a list below."""
    head = ["Method", *(organ_title(c) for c in table.columns)]
    lines = [f"**{table.title}** (Dice %, mean ± std over {table.spread})", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|")
    for row in table.rows:
        vals = [table.cells[(row.label, c)].text() for c in table.columns]
        lines.append("| " + " | ".join([row.label, *vals]) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "table",
    "row",
    "model",
    "prototypes",
    "method",
    "column",
    "mean",
    "std",
    "n",
    "spread",
)


def csv_rows(table: Table) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        for col in table.columns:
            c = table.cells[(row.label, col)]
            out.append(
                {
                    "table": table.title,
                    "row": row.label,
                    "model": row.model,
                    "prototypes": "" if row.prototypes is None else row.prototypes,
                    "method": row.method,
                    "column": col,
                    "mean": "" if not math.isfinite(c.mean) else f"{c.mean:.6f}",
                    "std": "" if not math.isfinite(c.std) else f"{c.std:.6f}",
                    "n": c.n,
                    "spread": table.spread,
                }
            )
    return out


def to_csv(tables: Sequence[Table]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        writer.writerows(csv_rows(t))
    return buf.getvalue()


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n")


__all__ = [
    "MEAN",
    "Cell",
    "RowSpec",
    "Table",
    "build_table",
    "csv_rows",
    "markdown",
    "table1_rows",
    "table2_rows",
    "to_csv",
    "write_json",
]
