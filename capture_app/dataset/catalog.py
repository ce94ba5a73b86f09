"""The catalog of many episodes: one row per episode in a Parquet file, kept up to date incrementally
(an episode whose size and modification time are unchanged keeps its row)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from capture_app.dataset.sources import file_identity, local_copy

COLUMNS = ("source", "name", "size_bytes", "mtime", "created", "operator", "task", "instruction", "duration_s",
           "rig", "calibration_id", "status", "format_version", "synced_rows", "subtasks", "verdict",
           "left_valid", "right_valid", "validation", "problems", "validated_at")


def catalog_row(source: str) -> dict:
    """Validate one episode against docs/episode-format.md and summarise it (a worker job)."""
    from capture_app.episode.file import open_episode
    from capture_app.episode.format import validate_and_summarize
    size, mtime = file_identity(source)
    with local_copy(source) as path:
        summary = validate_and_summarize(path)
        with open_episode(path) as f:
            attrs = {k: str(f.attrs.get(k, "")) for k in ("created_wall_time", "rig_name", "task")}
            calibration_id = str(f["calibration"].attrs.get("calibration_id", "")) if "calibration" in f else ""
    hands = (summary.quality or {}).get("hands", {})
    return {"source": source, "name": Path(source).stem, "size_bytes": size, "mtime": mtime,
            "created": attrs["created_wall_time"], "operator": summary.operator, "task": attrs["task"],
            "instruction": summary.instruction, "duration_s": summary.duration_s, "rig": attrs["rig_name"],
            "calibration_id": calibration_id, "status": summary.status, "format_version": summary.format_version,
            "synced_rows": summary.synced_rows, "subtasks": summary.subtasks,
            "verdict": (summary.quality or {}).get("verdict", "none"),
            "left_valid": float(hands.get("left", {}).get("valid", float("nan"))),
            "right_valid": float(hands.get("right", {}).get("valid", float("nan"))),
            "validation": "invalid" if summary.problems else "ok",
            "problems": json.dumps(summary.problems + summary.warnings), "validated_at": time.time()}


def failed_row(source: str, error: str) -> dict:
    """The row of an episode that could not be read at all."""
    row = {c: None for c in COLUMNS}
    row.update(source=source, name=Path(source).stem, validation="unreadable",
               problems=json.dumps([error.splitlines()[0]]), validated_at=time.time())
    return row


def load_catalog(path: str | Path) -> dict[str, dict]:
    """source -> row of an existing catalog (empty when there is none)."""
    path = Path(path)
    if not path.exists():
        return {}
    import pyarrow.parquet as pq
    return {row["source"]: row for row in pq.read_table(path).to_pylist()}


def stale_sources(sources: list[str], catalog: dict[str, dict]) -> list[str]:
    """The sources whose catalog row is missing or older than the file."""
    stale = []
    for source in sources:
        row = catalog.get(source)
        if row is None or row["validation"] == "unreadable" or (row["size_bytes"], row["mtime"]) != file_identity(source):
            stale.append(source)
    return stale


def write_catalog(path: str | Path, rows: list[dict]) -> None:
    """Write the catalog atomically (a temporary file renamed over the old one), sorted by source."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["source"])
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows])
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def catalog_stats(rows: list[dict]) -> dict:
    """Figures over a catalog: episodes, hours, per task and operator, verdicts, validation, mean validity."""
    readable = [r for r in rows if r["validation"] != "unreadable"]
    def count(key):
        out: dict[str, int] = {}
        for r in readable:
            out[str(r[key] or "")] = out.get(str(r[key] or ""), 0) + 1
        return out
    valid = [min(r["left_valid"], r["right_valid"]) for r in readable if r["left_valid"] is not None
             and r["left_valid"] == r["left_valid"]]
    return {"episodes": len(rows), "unreadable": len(rows) - len(readable),
            "hours": sum(r["duration_s"] or 0 for r in readable) / 3600, "by_task": count("task"),
            "by_operator": count("operator"), "verdicts": count("verdict"), "validation": count("validation"),
            "mean_hand_valid": sum(valid) / len(valid) if valid else None}
