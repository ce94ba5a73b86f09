"""Task templates: the tasks an operator records, their instructions and subtask labels (YAML).

```yaml
version: 1
tasks:
  - name: pour
    instruction: pour the juice from the tall blue mug into the bowl
    subtasks:
      - {label: grasp, hand: right, description: use right hand to grasp the tall blue mug}
```
Number keys 1..9 in the monitor pick the subtasks of the current task in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from capture_app.core.errors import ConfigError
from capture_app.core.values import MAX_NAME_CHARS, MAX_TEXT_CHARS, checked_text

HANDS = ("left", "right", "both")


@dataclass(frozen=True)
class SubtaskTemplate:
    label: str
    description: str = ""
    hand: str = "both"


@dataclass(frozen=True)
class TaskTemplate:
    name: str
    instruction: str
    subtasks: tuple[SubtaskTemplate, ...]


def _text(where: str, field: str, value, limit: int, required: bool = False) -> str:
    """A text field, within what the control channel accepts (docs/control.md, Limits)."""
    try:
        return checked_text(field, value, limit=limit, required=required)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_tasks(text: str, source: str = "<tasks>") -> list[TaskTemplate]:
    """Validate task-template YAML; ConfigError names the task and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ConfigError(f"{source}: expected a mapping with a non-empty 'tasks' list")
    if data.get("version", 1) != 1:
        raise ConfigError(f"{source}: version {data.get('version')!r} not supported (1)")
    tasks = []
    for i, task in enumerate(data["tasks"]):
        where = f"{source}: tasks[{i}]"
        if not isinstance(task, dict) or not isinstance(task.get("name"), str) or not task["name"]:
            raise ConfigError(f"{where}: needs a 'name'")
        _text(where, "name", task["name"], MAX_NAME_CHARS, required=True)
        instruction = _text(where, "instruction", task.get("instruction", ""), MAX_TEXT_CHARS)
        subtasks = []
        for j, sub in enumerate(task.get("subtasks") or []):
            if isinstance(sub, str):
                sub = {"label": sub}
            if not isinstance(sub, dict) or not isinstance(sub.get("label"), str):
                raise ConfigError(f"{where}.subtasks[{j}]: needs a 'label'")
            hand = sub.get("hand", "both")
            if hand not in HANDS:
                raise ConfigError(f"{where}.subtasks[{j}]: hand {hand!r} not in {HANDS}")
            label = _text(f"{where}.subtasks[{j}]", "label", sub["label"], MAX_NAME_CHARS, required=True)
            description = _text(f"{where}.subtasks[{j}]", "description", sub.get("description", ""), MAX_TEXT_CHARS)
            subtasks.append(SubtaskTemplate(label, description, hand))
        if len(subtasks) > 9:
            raise ConfigError(f"{where}: at most 9 subtasks (keys 1-9), got {len(subtasks)}")
        tasks.append(TaskTemplate(task["name"], instruction, tuple(subtasks)))
    return tasks


def load_tasks(path: str | Path | None = None) -> list[TaskTemplate]:
    """Load task templates; None gives the embedded examples."""
    if path is None:
        return parse_tasks(resources.files("capture_app.configs").joinpath("tasks.yaml").read_text(), "<embedded tasks.yaml>")
    try:
        return parse_tasks(Path(path).read_text(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read task file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"task file {path} is not UTF-8 text (a binary file?): give the YAML task file") from None
