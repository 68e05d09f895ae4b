"""The audit trail of dose recommendations: an embedded SQLite database (stdlib ``sqlite3``).

Every recommendation is stored with everything needed to reproduce it: the request
(every option), the patient record itself (not a path to it), the model's name, version
and source hash, the pkmix version, and the JSON answer. `replay` answers a stored
request again and compares the numbers.

The database is, in order: the path given (``--audit-db PATH``), the environment
variable ``PKMIX_AUDIT_DB``, or ``audit.sqlite3`` in the user's data directory
(``$XDG_DATA_HOME/pkmix`` or ``~/.local/share/pkmix``; ``%LOCALAPPDATA%\\pkmix`` on
Windows; ``~/Library/Application Support/pkmix`` on macOS).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import os
import sqlite3
import sys
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS recommendations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_utc TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT,
    model_sha256 TEXT,
    pkmix_version TEXT NOT NULL,
    question TEXT NOT NULL,
    request_json TEXT NOT NULL,
    patient_json TEXT NOT NULL,
    output_json TEXT NOT NULL
)
"""


class AuditError(ValueError):
    """The audit database cannot be used, or has no such record. ``field`` names the option."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def default_path() -> Path:
    """``PKMIX_AUDIT_DB``, else ``audit.sqlite3`` in the user's data directory."""
    env = os.environ.get("PKMIX_AUDIT_DB")
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "pkmix" / "audit.sqlite3"


def connect(path=None) -> sqlite3.Connection:
    path = Path(path).expanduser() if path is not None else default_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30.0)
        # WAL: the web server's concurrent requests write without blocking readers.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
    except (OSError, sqlite3.Error) as e:
        raise AuditError("audit_db", f"cannot open the audit database {path}: {e}") from None
    return conn


def model_identity(info) -> dict:
    """Name, version (METADATA ``version``) and SHA-256 of the source of a model; of
    several models (a list: model averaging), the names and versions joined by commas
    and the SHA-256 of their SHA-256s (None if any is unknown)."""
    if isinstance(info, (list, tuple)):
        parts = [model_identity(i) for i in info]
        shas = [p["model_sha256"] for p in parts]
        return {"model": ",".join(p["model"] for p in parts),
                "model_version": ",".join(p["model_version"] for p in parts),
                "model_sha256": None if None in shas else hashlib.sha256("".join(shas).encode()).hexdigest()}
    source = None
    module = getattr(info, "module", None)
    if module is not None:
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            source = None
    return {"model": info.name, "model_version": str(info.metadata.get("version") or ""),
            "model_sha256": hashlib.sha256(source.encode()).hexdigest() if source is not None else None}


def patient_record(patient) -> dict:
    """The patient as stored: the JSON object itself, or a CSV file's text."""
    from .input import Patient

    if isinstance(patient, dict):
        return {"json": patient}
    if not isinstance(patient, (str, os.PathLike)):
        what = "a Patient object" if isinstance(patient, Patient) else f"a {type(patient).__name__}"
        raise AuditError("patient", f"{what} cannot be audited: give the JSON object or the file (or audit=False)")
    path = Path(patient)
    if not path.exists():
        raise FileNotFoundError(f"patient file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        return {"json": json.loads(text), "file": str(path)}
    return {"csv": text, "file": str(path)}


def record(request_dict: dict, patient: dict, info, output: dict, *, question: str = "dose", path=None) -> int:
    """Store one answer; returns its id."""
    import pkmix

    ident = model_identity(info)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with connect(path) as conn:
        cur = conn.execute(
            "INSERT INTO recommendations (created_utc, model, model_version, model_sha256, pkmix_version, question, "
            "request_json, patient_json, output_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, ident["model"], ident["model_version"], ident["model_sha256"], pkmix.__version__, question,
             json.dumps(request_dict, sort_keys=True), json.dumps(patient, sort_keys=True),
             json.dumps(output, sort_keys=True)))
        return int(cur.lastrowid)


def fetch(audit_id: int, path=None) -> dict:
    """One stored record as a dict (request, patient and output parsed)."""
    if isinstance(audit_id, bool) or not isinstance(audit_id, int) or audit_id < 1:
        raise AuditError("replay", f"an audit id is a positive whole number, got {audit_id!r}")
    with connect(path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM recommendations WHERE id = ?", (audit_id,)).fetchone()
    if row is None:
        raise AuditError("replay", f"no recommendation {audit_id} in the audit database "
                                   f"{path or default_path()}")
    out = dict(row)
    for key in ("request_json", "patient_json", "output_json"):
        out[key[:-5]] = json.loads(out.pop(key))
    return out


def compare(stored, replayed, where: str = "") -> list[str]:
    """Paths at which two JSON answers differ (timings and the audit id left out)."""
    skip = {"timing", "audit_id", "replay"}
    diffs = []
    if isinstance(stored, dict) and isinstance(replayed, dict):
        for k in sorted(set(stored) | set(replayed)):
            if k in skip:
                continue
            if k not in stored or k not in replayed:
                diffs.append(f"{where}{k}: only in the {'stored' if k in stored else 'replayed'} answer")
            else:
                diffs += compare(stored[k], replayed[k], f"{where}{k}.")
    elif isinstance(stored, list) and isinstance(replayed, list):
        if len(stored) != len(replayed):
            diffs.append(f"{where.rstrip('.')}: {len(stored)} items stored, {len(replayed)} replayed")
        else:
            for i, (a, b) in enumerate(zip(stored, replayed)):
                diffs += compare(a, b, f"{where}{i}.")
    elif stored != replayed:
        diffs.append(f"{where.rstrip('.')}: stored {stored!r}, replayed {replayed!r}")
    return diffs
