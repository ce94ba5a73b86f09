"""The voice enrolment file: the operator's recordings of each phrase as templates (docs/voice-enrolment.md,
format version 1), written by ``capture-app voice-enrol`` and read by the recorder when ``[handsfree]
voice_enrolment`` names it.

A NumPy ``.npz`` archive (no pickles) of two arrays:

* ``meta``: a JSON text: ``{"format": "capture-app voice enrolment", "version": 1, "rate": 16000,
  "hop": 160, "n_mels": 32, "low_hz": 100.0, "high_hz": 7000.0, "templates": [{"phrase": ..., "frames":
  ...}, ...]}``;
* ``power``: float32 (sum of the templates' frames, n_mels): each template's linear mel power, in the
  order of ``meta["templates"]``, one after the other.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from capture_app.core.errors import ConfigError
from capture_app.handsfree import voice_templates as vt

FORMAT = "capture-app voice enrolment"
VERSION = 1
HOW_TO_FIX = "record it again with `capture-app voice-enrol --out FILE` (docs/voice-enrolment.md)"


def save_enrolment(path: str | Path, templates: list[vt.Template]) -> Path:
    """Write ``templates`` to ``path`` (atomically: a temporary file renamed over it)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "rate": vt.RATE, "hop": vt.HOP, "n_mels": vt.N_MELS,
            "low_hz": vt.LOW_HZ, "high_hz": vt.HIGH_HZ,
            "templates": [{"phrase": t.phrase, "frames": len(t.power)} for t in templates]}
    power = np.concatenate([t.power for t in templates]).astype(np.float32) if templates else \
        np.zeros((0, vt.N_MELS), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), power=power)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_enrolment(path: str | Path, phrases=None) -> list[vt.Template]:
    """The templates in the enrolment file ``path``. ``phrases``: the configured phrases, each of which must
    have at least one recording. Raises ``ConfigError`` saying what is wrong with which file and how to fix
    it (missing, not an enrolment file, another version or feature layout, a phrase not enrolled)."""
    path = Path(path)
    where = f"[handsfree] voice_enrolment = {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            power = np.asarray(archive["power"], np.float64)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file; {HOW_TO_FIX}") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not a voice enrolment file ({exc}); {HOW_TO_FIX}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a voice enrolment file (format {meta.get('format') if isinstance(meta, dict) else meta!r}); "
                          f"{HOW_TO_FIX}")
    if meta.get("version") != VERSION:
        raise ConfigError(f"{where}: version {meta.get('version')!r}, this recorder reads version {VERSION}; {HOW_TO_FIX}")
    layout = {"rate": vt.RATE, "hop": vt.HOP, "n_mels": vt.N_MELS, "low_hz": vt.LOW_HZ, "high_hz": vt.HIGH_HZ}
    other = {k: meta.get(k) for k, v in layout.items() if meta.get(k) != v}
    if other:
        raise ConfigError(f"{where}: features {other}, this recorder uses {layout}; {HOW_TO_FIX}")
    entries = meta.get("templates")
    try:
        frames = [int(e["frames"]) for e in entries]
        names = [str(e["phrase"]) for e in entries]
    except (TypeError, KeyError, ValueError):
        raise ConfigError(f"{where}: its template list is malformed; {HOW_TO_FIX}") from None
    if (power.ndim != 2 or power.shape[1] != vt.N_MELS or sum(frames) != len(power) or min(frames, default=2) < 2
            or not np.all(np.isfinite(power)) or np.any(power <= 0)):
        raise ConfigError(f"{where}: its templates do not match its list (damaged file); {HOW_TO_FIX}")
    bounds = np.cumsum([0] + frames)
    templates = [vt.Template(name, power[a:b]) for name, a, b in zip(names, bounds[:-1], bounds[1:])]
    missing = sorted(set(phrases or ()) - set(names))
    if missing:
        raise ConfigError(f"{where}: no recordings of {missing} (it holds {sorted(set(names))}); enrol them with "
                          f"`capture-app voice-enrol --out FILE` for the same rig config")
    return templates
