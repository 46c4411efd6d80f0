"""Per-round bench records: read the runs a bench wrote, write them back as one table, atomic writes.

A bench output directory holds one folder per run (``runs/<strategy>-seed<seed>/``) with
``rounds.json``, a list of round records, and ``queries.json``, the queried items per round. This
module reads them, checks them, and writes the combined ``records.csv`` / ``records.json``. The
atomic-write helpers are shared with the runner so that an interrupted bench never leaves a
half-written file behind (resume reads these files back).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable

from focal_al.files import readable

import numpy as np

#: Keys every round record must have; the order is the column order of ``records.csv``.
REQUIRED_KEYS = (
    "strategy",
    "seed",
    "round",
    "cost",
    "n_revealed_pixels",
    "n_labelled",
    "dice",
    "voe",
    "object_f1",
    "object_dice",
)
#: Keys a record may omit; a missing one reads as ``None`` (``label`` reads as the strategy name).
OPTIONAL_KEYS = ("label", "cu", "cd", "foreground_cost", "n_revealed_foreground", "n_regions",
                 "n_revealed_boundary", "boundary_cost", "foreground_efficiency", "train_steps",
                 "train_seconds", "query_seconds", "eval_seconds", "threads")
#: Metric keys whose values are numbers (``cu`` / ``cd`` may also be ``None``).
METRIC_KEYS = ("dice", "voe", "object_f1", "object_dice", "cu", "cd")

_COLUMNS = ("strategy", "label", "seed", "round") + tuple(
    k for k in REQUIRED_KEYS + OPTIONAL_KEYS if k not in ("strategy", "label", "seed", "round")
)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` so that readers see either the old file or the complete new one.

    The data go to a temporary file in the same directory (``os.replace`` is only atomic within one
    file system), which is flushed and fsynced before it replaces ``path``. The temporary file is
    removed if anything fails.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    data : bytes
        The complete new content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        # The temporary file is ours alone; leaving it would litter the run folder on every crash.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # The rename itself lives in the directory entry; fsync it so a power loss cannot undo it.
    # Windows cannot open a directory for fsync, and os.replace is already durable enough there.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    text : str
        The complete new content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # Records are built from numpy results; accept numpy scalars and arrays instead of making every
    # caller convert them.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as standard JSON to ``path`` atomically; see :func:`atomic_write_bytes`.

    numpy scalars and arrays are converted to Python numbers and lists. NaN and infinity are
    refused, because standard JSON cannot represent them (``json.loads`` in other languages
    rejects them): write ``None`` for an undefined value.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    obj : object
        A JSON-serialisable object.
    indent : int or None, default=2
        Indentation passed to :func:`json.dumps`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``obj`` contains NaN or infinity.
    """
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False, default=_json_default)
    except ValueError as err:
        raise ValueError(
            f"Cannot write {os.fspath(path)}: the object contains NaN or infinity, which standard JSON "
            f"cannot represent; write None for an undefined value ({err})."
        ) from err
    return atomic_write_text(path, text + "\n")


def _is_number(value: Any) -> bool:
    # Finite only: NaN would silently drop out of means and cannot be written back as JSON.
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _record_problems(record: Any) -> list[str]:
    """What is wrong with one round record (empty if nothing)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        problems.append(f"missing required key(s) {', '.join(missing)}")
    if "strategy" in record and not (isinstance(record["strategy"], str) and record["strategy"]):
        problems.append(f"'strategy' must be a non-empty string, got {record['strategy']!r}")
    for key in ("seed", "round", "n_revealed_pixels", "n_labelled"):
        if key in record and not _is_int(record[key]):
            problems.append(f"{key!r} must be an integer, got {record[key]!r}")
    if "round" in record and _is_int(record["round"]) and record["round"] < 0:
        problems.append(f"'round' must be >= 0, got {record['round']}")
    if "cost" in record and not (_is_number(record["cost"]) and 0.0 <= record["cost"] <= 1.0):
        problems.append(f"'cost' must be a number in [0, 1], got {record['cost']!r}")
    for key in ("dice", "voe", "object_f1", "object_dice"):
        if key in record and not _is_number(record[key]):
            problems.append(f"{key!r} must be a finite number, got {record[key]!r}")
    for key in OPTIONAL_KEYS[1:]:
        value = record.get(key)
        if value is not None and not _is_number(value):
            problems.append(f"{key!r} must be a finite number or null, got {value!r}")
    drift = record.get("replay_drift")  # see focal_al.bench.stats.replay_drifts
    if drift is not None and not (isinstance(drift, dict) and _is_int(drift.get("round"))
                                  and all(_is_number(drift.get(k)) for k in ("recorded_dice", "replayed_dice"))):
        problems.append(f"'replay_drift' must be an object with 'round', 'recorded_dice' and 'replayed_dice', got {drift!r}")
    return problems


def _read_rounds(path: Path) -> list[dict]:
    """Read and check one ``rounds.json``; every error names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of round records, got {type(data).__name__}.")
    problems = [f"record {i}: {p}" for i, record in enumerate(data) for p in _record_problems(record)]
    if not problems:
        # One file is one run: a mixed file means two runs were written into one folder.
        runs = sorted({(r["strategy"], r["seed"]) for r in data})
        if len(runs) > 1:
            problems.append(f"records of several runs (strategy, seed) in one file: {runs}")
        rounds = [r["round"] for r in data]
        duplicated = sorted({r for r in rounds if rounds.count(r) > 1})
        if duplicated:
            problems.append(f"round(s) {duplicated} recorded more than once")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"{path} holds malformed round records: {shown}.")
    records = []
    for record in data:
        full = {key: None for key in OPTIONAL_KEYS}
        full.update(record)
        if full["label"] is None:
            full["label"] = full["strategy"]
        records.append(full)
    return records


def _sort_key(record: dict) -> tuple:
    return (record["strategy"], record["seed"], record["round"])


def load_records(out_dir: str | os.PathLike) -> list[dict]:
    """Read the round records of every run of a bench output directory.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The bench output directory; every ``runs/*/rounds.json`` under it is read.

    Returns
    -------
    list of dict
        All round records, sorted by strategy, seed and round. Optional keys
        (``label``, ``cu``, ``cd``, ``*_seconds``) are filled in with ``None`` when missing
        (``label`` with the strategy name); keys beyond the documented ones are kept. Empty if
        there are no runs yet.

    Raises
    ------
    NotADirectoryError
        If ``out_dir`` is not a directory.
    ValueError
        If a ``rounds.json`` is not valid JSON, is not a list, a record misses a required key or
        has a value of the wrong type, or two files hold the same run; the message names the file.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise NotADirectoryError(f"The bench output directory {out_dir} does not exist or is not a directory.")
    records: list[dict] = []
    seen: dict[tuple, Path] = {}
    for path in sorted(out_dir.glob("runs/*/rounds.json")):
        run_records = _read_rounds(path)
        if run_records:
            run = (run_records[0]["strategy"], run_records[0]["seed"])
            if run in seen:
                raise ValueError(
                    f"{path} and {seen[run]} both hold strategy {run[0]!r} with seed {run[1]}; "
                    "each run must be recorded in one folder only."
                )
            seen[run] = path
        records.extend(run_records)
    return sorted(records, key=_sort_key)


def load_queries(out_dir: str | os.PathLike) -> dict[tuple[str, int], list[dict]]:
    """Read the queried items of every run of a bench output directory.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The bench output directory; every ``runs/<strategy>-seed<seed>/queries.json`` is read.

    Returns
    -------
    dict
        ``(strategy, seed)`` (parsed from the folder name) to the list over rounds of
        ``{"round": r, "level": "patch" or "image", "items": [{"image", "y", "x", "size"}, ...]}``.

    Raises
    ------
    ValueError
        If a folder name is not ``<strategy>-seed<int>`` or a ``queries.json`` is not a JSON list of
        objects with ``round``, ``level`` and ``items``; the message names the file.
    """
    queries = {}
    for path in sorted(Path(out_dir).glob("runs/*/queries.json")):
        strategy, sep, seed = path.parent.name.rpartition("-seed")
        if not (sep and strategy and seed.lstrip("-").isdigit()):
            raise ValueError(
                f"{path.parent} is not named '<strategy>-seed<seed>' (for example 'focannot-seed0')."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}.") from err
        bad = (
            not isinstance(data, list)
            or not all(isinstance(q, dict) and {"round", "level", "items"} <= q.keys() for q in data)
        )
        if bad:
            raise ValueError(
                f"{path} must hold a JSON list of objects with keys 'round', 'level' and 'items'."
            )
        queries[(strategy, int(seed))] = data
    return queries


def _csv_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_records(out_dir: str | os.PathLike, records: Iterable[dict]) -> tuple[Path, Path]:
    """Write all round records as ``records.csv`` and ``records.json`` in ``out_dir``, atomically.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The bench output directory (must exist).
    records : iterable of dict
        Round records, as returned by :func:`load_records`. They are sorted by strategy, seed and
        round. CSV columns are the documented keys first, then any further keys in sorted order;
        ``None`` is an empty cell.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The CSV and JSON paths.
    """
    out_dir = Path(out_dir)
    records = sorted(records, key=_sort_key)
    extra = sorted({k for r in records for k in r} - set(_COLUMNS))
    columns = list(_COLUMNS) + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_cell(record.get(k)) for k in columns})
    csv_path = atomic_write_text(out_dir / "records.csv", buffer.getvalue())
    json_path = atomic_write_json(out_dir / "records.json", records)
    return csv_path, json_path
