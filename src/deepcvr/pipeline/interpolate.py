"""`${...}` interpolation: `${params.X}`, `${env:NAME}`, `${workspace}`; `$${` is a literal.

Every value is resolved twice, for real and for show: a value read from the environment is
shown as `***`, so the masked copy can be logged and stored.
"""

from __future__ import annotations

import os
import re
from typing import Any, NoReturn

from deepcvr.errors import ConfigError
from deepcvr.pipeline.yamlio import Loc, yaml_path
from deepcvr.secrets import MASK, register_secret

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Env values are masked as *** in the structured view; in free text (errors, logs) only those
# that look secret are masked, so paths read from the environment stay readable.
_SECRET_ENV = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|(^|_)PWD?(_|$)", re.IGNORECASE)
_URL_PW = re.compile(r"://[^\s:/@]*:([^\s/@]+)@")


class _Interpolator:
    def __init__(self, src: str, workspace: tuple[Any, Any] | None, params: Any = None):
        self.src, self.workspace, self.params = src, workspace, params

    def walk(self, obj: Any, loc: Loc) -> tuple[Any, Any]:
        """(real, masked) copies of `obj` with every `${...}` reference resolved."""
        if isinstance(obj, str):
            return self.string(obj, loc)
        if isinstance(obj, dict):
            pairs = {k: self.walk(v, (*loc, k)) for k, v in obj.items()}
            return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
        if isinstance(obj, list):
            pairs_l = [self.walk(v, (*loc, i)) for i, v in enumerate(obj)]
            return [p[0] for p in pairs_l], [p[1] for p in pairs_l]
        return obj, obj

    def string(self, s: str, loc: Loc) -> tuple[Any, Any]:
        whole = _REF.fullmatch(s)
        if whole and whole[1] is not None:  # a whole-string reference keeps the value's type
            return self.ref(whole[1].strip(), loc)
        real: list[str] = []
        masked: list[str] = []
        pos = 0
        for m in _REF.finditer(s):
            real.append(s[pos : m.start()])
            masked.append(s[pos : m.start()])
            pos = m.end()
            if m[1] is None:  # `$${` escapes a literal `${`
                real.append("${")
                masked.append("${")
                continue
            value, shown = self.ref(m[1].strip(), loc)
            if isinstance(value, dict | list):
                self.fail(
                    loc, f"${{{m[1]}}} is a {type(value).__name__}; it cannot be embedded in text"
                )
            real.append("" if value is None else str(value))
            masked.append("" if shown is None else str(shown))
        real.append(s[pos:])
        masked.append(s[pos:])
        return "".join(real), "".join(masked)

    def ref(self, expr: str, loc: Loc) -> tuple[Any, Any]:
        if expr == "workspace":
            if self.workspace is None:
                self.fail(loc, "${workspace} cannot be used in the workspace itself")
            return self.workspace
        if expr.startswith("env:"):
            return self.env(expr[4:].strip(), loc)
        if expr.startswith("params."):
            if self.params is None:
                self.fail(loc, f"${{{expr}}}: params may only use ${{env:NAME}} and ${{workspace}}")
            real, masked = self.params
            for part in expr.split(".")[1:]:
                if not isinstance(real, dict) or part not in real:
                    choices = real if isinstance(real, dict) else {}
                    known = ", ".join(map(str, choices)) or "none"
                    self.fail(loc, f"${{{expr}}}: unknown param '{part}' (params: {known})")
                real, masked = real[part], masked[part]
            return real, masked
        self.fail(
            loc,
            f"unknown reference ${{{expr}}} "
            "(use ${params.NAME}, ${env:NAME} or ${workspace})",
        )

    def env(self, name: str, loc: Loc) -> tuple[str, str]:
        if not _ENV_NAME.fullmatch(name):
            self.fail(loc, f"${{env:{name}}}: not a valid environment variable name")
        value = os.environ.get(name)
        if value is None:
            self.fail(loc, f"${{env:{name}}} is not set; export it or use --set")
        if _SECRET_ENV.search(name):
            register_secret(value)
        for pw in _URL_PW.findall(value):
            register_secret(pw)
        return value, MASK

    def fail(self, loc: Loc, message: str) -> NoReturn:
        raise ConfigError(f"{self.src}: {yaml_path(loc)}: {message}")


def interpolate_document(raw: dict[str, Any], src: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolve workspace (env only), then params (env, workspace), then tasks' `with` (all)."""
    real, masked = dict(raw), dict(raw)
    ws = _Interpolator(src, None).walk(raw.get("workspace", "data"), ("workspace",))
    if "workspace" in raw:
        real["workspace"], masked["workspace"] = ws
    params = _Interpolator(src, ws).walk(raw.get("params", {}), ("params",))
    real["params"], masked["params"] = params
    full = _Interpolator(src, ws, params)
    if "max_parallel" in raw:
        real["max_parallel"], masked["max_parallel"] = full.walk(
            raw["max_parallel"], ("max_parallel",)
        )
    tasks = raw.get("tasks")
    if isinstance(tasks, dict):
        real["tasks"], masked["tasks"] = {}, {}
        for name, task in tasks.items():
            if isinstance(task, dict) and "with" in task:
                r, m = full.walk(task["with"], ("tasks", name, "with"))
                real["tasks"][name] = {**task, "with": r}
                masked["tasks"][name] = {**task, "with": m}
            else:
                real["tasks"][name] = masked["tasks"][name] = task
    return real, masked
