"""Reading a pipeline file (strict YAML) and applying `--set KEY=VALUE` overrides."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from deepcvr.errors import ConfigError

Loc = tuple[str | int, ...]


def yaml_path(loc: Iterable[str | int]) -> str:
    """("tasks", "load", "with", "split", 0) -> "tasks.load.with.split[0]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, choices: Iterable[Any]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(e: object) -> str:
    return " ".join(str(e).split())


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool):
            continue  # unhashable keys are reported by construct_mapping itself
        if key in seen:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e.reason}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'name' and 'tasks' at the top level")
    return data


_TOP_SCALARS = ("name", "description", "workspace", "max_parallel")


def apply_override(raw: dict[str, Any], item: str, src: str) -> None:
    """`--set KEY=VALUE`: KEY is a param, a top-level scalar, or a dotted path to a YAML key."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{src}: --set {item}: expected KEY=VALUE")
    value = _yaml_value(text)
    where = f"{src}: --set {key}"
    if raw.get("params") is None:
        raw["params"] = {}
    parts = key.split(".")
    if len(parts) == 1 and key in _TOP_SCALARS and key not in raw["params"]:
        raw[key] = value
        return
    if len(parts) == 1:
        parts = ["params", key]
    head, rest = parts[0], parts[1:]
    if head == "params":
        _set_path(raw["params"], rest, value, where, creatable=False, what="param")
        return
    if head != "tasks":
        raise ConfigError(f"{where}: unknown path (use a param name, params.X or tasks.T.with.X)")
    tasks = raw.get("tasks") if isinstance(raw.get("tasks"), dict) else {}
    task = tasks.get(rest[0])
    if not isinstance(task, dict):
        raise ConfigError(f"{where}: unknown task '{rest[0]}'{did_you_mean(rest[0], tasks)}")
    if (
        len(rest) < 2
        or rest[1] not in ("op", "needs", "with")
        or (rest[1] != "with") != (len(rest) == 2)
    ):
        raise ConfigError(
            f"{where}: expected tasks.TASK.op, tasks.TASK.needs or tasks.TASK.with.KEY"
        )
    if rest[1] != "with":
        task[rest[1]] = value
        return
    if not isinstance(task.get("with"), dict):
        task["with"] = {}
    # A new `with` key is allowed: the op's params model rejects it if it is unknown.
    _set_path(task["with"], rest[2:], value, where, creatable=True, what="key")


def _set_path(
    node: Any, parts: list[str], value: Any, where: str, creatable: bool, what: str
) -> None:
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{'.'.join(parts[:i])}' is not a mapping")
        if part not in node and not (creatable and i == len(parts) - 1):
            raise ConfigError(f"{where}: unknown {what} '{part}'{did_you_mean(part, node)}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _yaml_value(text: str) -> Any:
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML: take it literally
