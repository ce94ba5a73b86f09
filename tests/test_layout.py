"""The package layout's one rule: imports point down the data path, never up (README, "How it fits together").

Each package may import only packages of a lower layer (and itself). Lazy imports inside functions count too:
an upward import hidden in a function is still a cycle for the next reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A module belongs to the longest package prefix listed here.
LAYERS = [
    ["capture_app.core"],
    ["capture_app.episode"],
    ["calibration"],
    ["capture_app.bus"],
    ["capture_app.rig", "capture_app.configs"],
    ["drivers"],
    ["capture_app.recorder"],
    ["capture_app.handsfree"],
    ["capture_app.monitor", "capture_app.dataset", "capture_app.panel", "capture_app.fleet"],
    ["capture_app.tools"],
    ["capture_app.cli", "capture_app.__main__"],
]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LEVEL:
            return prefix
    return None


def _modules():
    for top in ("capture_app", "drivers", "calibration"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:  # `from capture_app.bus import wire` imports capture_app.bus.wire
                yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_every_module_belongs_to_a_layer():
    homeless = [name for name, _ in _modules() if name not in ("capture_app", "drivers", "calibration")
                and _package_of(name) is None]
    assert homeless == [], f"modules outside every package of LAYERS (add them to a package): {homeless}"


def test_imports_point_down_only():
    upward = []
    for name, path in _modules():
        own = _package_of(name)
        if own is None:
            continue
        for imported, line in _imports(path):
            target = _package_of(imported)
            if target is not None and LEVEL[target] > LEVEL[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {imported} ({target})")
    assert sorted(set(upward)) == []


@pytest.mark.parametrize("leaf", ["calibration.model", "capture_app.bus.driver_status"])
def test_the_records_everyone_shares_are_leaves(leaf):
    path = ROOT / Path(*leaf.split(".")).with_suffix(".py")
    project = [m for m, _ in _imports(path) if m.split(".")[0] in ("capture_app", "drivers", "calibration")]
    assert all(m.startswith("capture_app.core") for m in project), project
