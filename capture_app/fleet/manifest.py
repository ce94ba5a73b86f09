"""The upload manifest (docs/upload.md, "Manifest"): written beside an uploaded episode, last, only
after every file it lists was verified on the destination; its presence marks a complete upload."""

from __future__ import annotations

import time

MANIFEST_FORMAT = "capture-app-upload-manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


def episode_prefix(rig: str, episode: str) -> str:
    """The destination folder of one episode: ``<rig>/episodes/<episode name>``."""
    return f"{rig}/episodes/{episode}"


def build_manifest(rig: str, episode: str, files: list[dict], info: dict, software_version: str) -> dict:
    """``files``: [{"path": name relative to the manifest, "size": bytes, "sha256": hex}]."""
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "rig": rig, "episode": episode,
            "software_version": software_version, "uploaded_at": time.time(), "files": files, "episode_info": info}


def check_manifest(manifest: dict, where: str) -> list[str]:
    """What is wrong with a manifest read from ``where`` (empty: nothing)."""
    problems = []
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        problems.append(f"{where}: not a version {MANIFEST_VERSION} manifest")
    for f in manifest.get("files", []):
        if not (isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64 and isinstance(f.get("size"), int)):
            problems.append(f"{where}: file entry {f!r} lacks size or sha256")
    return problems
