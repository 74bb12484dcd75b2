"""Write an evaluation's outputs: Markdown and CSV tables, per-volume JSON, the figure."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

from .datasets import organ_title
from .figures import dice_prior_figure
from .runner import Results
from .tables import Table, build_table, markdown, table1_rows, table2_rows, to_csv, write_json

#: File names inside ``--out``.
FILES = {
    "markdown": "results.md",
    "csv": "tables.csv",
    "json": "per_volume.json",
    "figure": "dice_vs_prior.png",
}


def make_tables(results: Results) -> list[Table]:
    """Table 1 (binary) and, when multi-class records exist, Table 2."""
    meta = results.meta
    organs = list(meta.get("classes", {}))
    recs = results.records
    tables = []
    protocol = meta.get("protocol", "EP2")
    n = len(meta.get("volumes", []))
    where = meta.get("title") or f"{n} volume{'s' if n != 1 else ''}"
    support = meta.get("support")
    sup_text = f", {support}-volume support" if support else ""
    if any(r["kind"] == "binary" for r in recs):
        notes = [n for n in results.notes if "Table 2" not in n and "max rule" not in n]
        tables.append(
            build_table(
                recs,
                table1_rows(recs, meta.get("prototypes", [1, 5])),
                organs,
                kind="binary",
                title=f"Table 1: binary segmentation, {where}, {protocol}{sup_text}",
                notes=notes,
            )
        )
    if any(r["kind"] == "multiclass" for r in recs):
        notes = [n for n in results.notes if "Table 2" in n or "max rule" in n]
        if meta.get("mode") == "paper":
            notes.append(
                "one support slice with the most labels; every volume of the fold takes a turn "
                "as the support and every other volume of the fold is a query (the reference "
                "loader can also score the support volume itself; here it never does)"
            )
        else:
            notes.append("one support slice with the most labels, all classes painted on it")
        tables.append(
            build_table(
                recs,
                table2_rows(recs, paper=meta.get("mode") == "paper"),
                organs,
                kind="multiclass",
                title=f"Table 2: multi-class segmentation, {where}{sup_text}",
                notes=notes,
            )
        )
    return tables


def _header(results: Results) -> list[str]:
    meta = results.meta
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        "# napari-tpm evaluation",
        "",
        f"- date: {now}; machine: {platform.machine()} {platform.system()}, "
        f"Python {platform.python_version()}",
    ]
    for key in (
        "mode", "dataset", "setting", "protocol", "support", "checkpoint", "checkpoints",
        "adnet_checkpoint", "adnet_checkpoints", "mf_checkpoint", "mf_checkpoints", "runs",
        "folds", "prototypes", "product_options", "device", "seconds",
    ):  # fmt: skip
        if meta.get(key) not in (None, "", []):
            lines.append(f"- {key}: {meta[key]}")
    classes = meta.get("classes", {})
    if classes:
        lines.append(
            "- classes: " + ", ".join(f"{organ_title(k)} = {v}" for k, v in classes.items())
        )
    lines.append(
        f"- volumes ({len(meta.get('volumes', []))}): {', '.join(meta.get('volumes', []))}"
    )
    return lines


def write_report(results: Results, out: str | Path) -> dict[str, Path]:
    """Write every output file into ``out`` (created); returns kind -> path of what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = make_tables(results)
    paths: dict[str, Path] = {}
    fig = dice_prior_figure(
        results.records,
        results.meta.get("prior_grid", []),
        out / FILES["figure"],
        title=f"Dice vs class prior ({results.meta.get('protocol', 'EP2')})",
    )
    body = [*_header(results), ""]
    for t in tables:
        body.append(markdown(t))
    if fig is not None:
        paths["figure"] = fig
        body.append(f"![Dice vs class prior]({FILES['figure']})\n")
    paths["markdown"] = out / FILES["markdown"]
    paths["markdown"].write_text("\n".join(body), encoding="utf-8")
    paths["csv"] = out / FILES["csv"]
    paths["csv"].write_text(to_csv(tables), encoding="utf-8")
    paths["json"] = out / FILES["json"]
    payload: dict[str, Any] = {
        "meta": results.meta,
        "notes": results.notes,
        "records": results.records,
    }
    write_json(paths["json"], payload)
    return paths


__all__ = ["FILES", "make_tables", "write_report"]
