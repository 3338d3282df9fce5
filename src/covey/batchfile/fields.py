"""The fields of one job entry, each read into what :class:`~covey.spec.JobSpec` takes.

One handler per compose key, so that a key's rules and its error messages sit in one place, and
keys covey does not support are named with what to use instead. ``volumes`` and ``env_file`` are
relative to the batch file and bare ``environment`` keys read the caller's environment, which is
why :class:`_Job` holds both.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from covey import flags
from covey.batchfile.nodes import (
    _as_bool,
    _as_list,
    _as_map,
    _as_text,
    _call,
    _check,
    _check_keys,
    _fail,
    _kind,
    _Node,
    _present,
)
from covey.errors import SpecError
from covey.pipeline import RESERVED_ENV
from covey.spec import Mount, Resources, RetryPolicy, SecretRef, validate_name

_Fields = dict[str, Any]


def _argv(node: _Node) -> tuple[str, ...]:
    """A string split like a shell would (no expansion), or a list of strings."""
    if isinstance(node.value, str):
        try:
            return tuple(shlex.split(node.value))
        except ValueError as exc:
            raise _fail(node, f"cannot split {node.value!r}: {exc}") from None
    items = _as_list(node, "a string or a list of strings")
    return tuple(_as_text(item) for item in items)


def _image(node: _Node) -> _Fields:
    return {"image": _check(flags.parse_image, node, _as_text(node))}


def _user(node: _Node) -> _Fields:
    user = _as_text(node)
    if not user:
        raise _fail(node, "must not be empty")
    return {"user": user}


def _working_dir(node: _Node) -> _Fields:
    workdir = _as_text(node)
    if not workdir.startswith("/"):
        raise _fail(node, f"'{workdir}' is not an absolute path")
    return {"workdir": workdir}


def _labels(node: _Node) -> _Fields:
    labels: dict[str, str] = {}
    for key, child in _as_map(node).items():
        _check(flags.validate_label_key, child, key)
        labels[key] = "" if child.value is None else _scalar_text(child)
    return {"labels": tuple(labels.items())}


def _scalar_text(node: _Node) -> str:
    """A value for env or labels: any scalar, exactly as written."""
    if isinstance(node.value, dict | list):
        raise _fail(node, f"expected a string, got {_kind(node.value)}")
    return node.text if not isinstance(node.value, str) else node.value


def _networks(node: _Node) -> _Fields:
    if isinstance(node.value, dict):
        names = []
        for key, child in _as_map(node).items():
            if child.value is not None and child.value != {}:
                raise _fail(child, "network options are not supported by covey")
            names.append(_check(validate_name, child, key))
    else:
        items = _as_list(node, "a list of network names")
        names = [_check(validate_name, item, _as_text(item)) for item in items]
    return {"networks": tuple(names)}


def _secret(node: _Node) -> SecretRef:
    if not isinstance(node.value, dict):
        return SecretRef(source=_check(validate_name, node, _as_text(node, "a secret name")))
    unsupported = dict.fromkeys(("uid", "gid", "mode"), "only source and target")
    mapping = _check_keys(node, ("source", "target"), unsupported)
    source = mapping.get("source")
    if source is None:
        raise _fail(node, "source is required")
    target = _present(mapping, "target")
    return SecretRef(
        source=_check(validate_name, source, _as_text(source)),
        target=None if target is None else _as_text(target),
    )


def _secrets(node: _Node) -> _Fields:
    return {"secrets": tuple(_secret(item) for item in _as_list(node))}


class _Job:
    """Reads one (defaults-merged) job entry; holds what file-relative fields need."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.handlers: dict[str, Callable[[_Node], _Fields]] = {
            "image": _image,
            "command": lambda n: {"command": _argv(n)},
            "entrypoint": lambda n: {"entrypoint": _argv(n)},
            "labels": _labels,
            "user": _user,
            "working_dir": _working_dir,
            "networks": _networks,
            "secrets": _secrets,
            "volumes": self._volumes,
            "deploy": _deploy,
            "stop_grace_period": lambda n: {"stop_grace_period": _duration(n, allow_zero=True)},
            "timeout": lambda n: {"timeout": _duration(n)},
            "pending_timeout": lambda n: {"pending_timeout": _duration(n)},
            "retry": _retry,
            "registry_auth": lambda n: {"registry_auth": _as_bool(n)},
            "resolve_image": lambda n: {"resolve_image": _as_bool(n)},
            "priority": lambda n: {"priority": _call(n, flags.parse_int, "an integer")},
        }

    def fields(self, job: Mapping[str, _Node]) -> _Fields:
        out: _Fields = {}
        for key, handler in self.handlers.items():
            node = _present(job, key)
            if node is not None:
                out.update(handler(node))
        out["env"] = self._env(job)
        return out

    def _env(self, job: Mapping[str, _Node]) -> tuple[tuple[str, str], ...]:
        """``env_file`` entries, then ``environment`` on top, as compose does."""
        env: dict[str, str] = {}
        env_file = _present(job, "env_file")
        if env_file is not None:
            for key, value, node in self._env_files(env_file):
                if key in RESERVED_ENV:
                    raise _fail(node, _reserved(key))
                env[key] = value
        environment = _present(job, "environment")
        if environment is not None:
            for key, child in _as_map(environment).items():
                _check(flags.validate_env_key, child, key)
                if key in RESERVED_ENV:
                    raise _fail(child, _reserved(key))
                if child.value is not None:
                    env[key] = _scalar_text(child)
                elif key in self.environ:
                    env[key] = self.environ[key]
        return tuple(env.items())

    def _env_files(self, node: _Node) -> list[tuple[str, str, _Node]]:
        entries = cast(list[_Node], node.value) if isinstance(node.value, list) else [node]
        pairs: list[tuple[str, str, _Node]] = []
        for item in entries:
            entry, required = item, True
            if isinstance(item.value, dict):
                mapping = _check_keys(item, ("path", "required"))
                if "path" not in mapping:
                    raise _fail(item, "path is required")
                required = "required" not in mapping or _as_bool(mapping["required"])
                entry = mapping["path"]
            path = self.base_dir / _as_text(entry, "a path")
            if not required and not path.exists():
                continue
            try:
                found = flags.parse_env_file(path, self.environ)
            except SpecError as exc:
                raise _fail(entry, str(exc)) from None
            pairs.extend((key, value, entry) for key, value in found)
        return pairs

    def _volumes(self, node: _Node) -> _Fields:
        return {"mounts": tuple(self._volume(item) for item in _as_list(node))}

    def _volume(self, node: _Node) -> Mount:
        base = os.path.abspath(self.base_dir)
        if not isinstance(node.value, dict):
            return _call(node, flags.parse_volume, "SRC:DST[:ro]", base_dir=base)
        unsupported = dict.fromkeys(("bind", "volume", "tmpfs", "consistency"), "options")
        mapping = _check_keys(node, ("type", "source", "target", "read_only"), unsupported)
        kind = _present(mapping, "type")
        source = _present(mapping, "source")
        target = _present(mapping, "target")
        read_only = _present(mapping, "read_only")
        src = None if source is None else _as_text(source)
        relative = src is not None and (src in (".", "..") or src.startswith(("./", "../")))
        if kind is not None:
            mount_type = _as_text(kind)
        else:  # compose wants a type; guessing it the way the short syntax does is harmless
            mount_type = "bind" if relative or (src or "").startswith("/") else "volume"
        if src is not None and relative and mount_type == "bind":
            src = os.path.normpath(os.path.join(base, src))
        return _check(
            flags.build_mount,
            node,
            mount_type,
            None if target is None else _as_text(target),
            src,
            False if read_only is None else _as_bool(read_only),
        )


def _reserved(key: str) -> str:
    return f"{key} is set by covey (from {'inputs' if key == 'COVEY_INPUTS' else 'for_each'})"


def _duration(node: _Node, *, allow_zero: bool = False) -> float:
    return _call(node, flags.parse_duration, "a duration", allow_zero=allow_zero)


_DEPLOY_HINTS = {
    "restart_policy": "use 'retry'",
    "replicas": "a job runs exactly one task",
    "mode": "a job runs exactly one task",
    "labels": "use the job's 'labels'",
    "update_config": "jobs are not updated",
    "rollback_config": "jobs are not updated",
    "endpoint_mode": "jobs publish no ports",
}


def _deploy(node: _Node) -> _Fields:
    deploy = _check_keys(node, ("resources", "placement"), _DEPLOY_HINTS)
    out: _Fields = {}
    resources = _present(deploy, "resources")
    if resources is not None:
        sections = _check_keys(resources, ("reservations", "limits"), {"pids": "not a swarm limit"})
        res: dict[str, int] = {}
        for section, prefix in (("reservations", "reserve"), ("limits", "limit")):
            node_ = _present(sections, section)
            if node_ is None:
                continue
            hints = dict.fromkeys(("devices", "generic_resources", "pids"), "cpus and memory only")
            values = _check_keys(node_, ("cpus", "memory"), hints)
            cpus, memory = _present(values, "cpus"), _present(values, "memory")
            if cpus is not None:
                res[f"{prefix}_nano_cpus"] = _call(cpus, flags.parse_cpus, "a number of CPUs")
            if memory is not None:
                res[f"{prefix}_memory"] = _call(memory, flags.parse_size, "a size")
        out["resources"] = Resources(**res)
    placement = _present(deploy, "placement")
    if placement is not None:
        hints = dict.fromkeys(("preferences", "max_replicas_per_node"), "constraints only")
        constraints = _present(_check_keys(placement, ("constraints",), hints), "constraints")
        if constraints is not None:
            items = _as_list(constraints, "a list of constraints")
            out["constraints"] = tuple(
                _call(item, flags.parse_constraint, "a constraint") for item in items
            )
    return out


def _exit_codes(node: _Node) -> tuple[int, ...]:
    items = _as_list(node, "a list of exit codes")
    if not items:
        raise _fail(node, "empty list (leave the key out to retry on any non-zero exit code)")
    return tuple(dict.fromkeys(_call(i, flags.parse_exit_code, "an exit code") for i in items))


_RETRY_FIELDS: dict[str, Callable[[_Node], Any]] = {
    "attempts": lambda n: _call(n, flags.parse_int, "an integer", minimum=1),
    "backoff": lambda n: _duration(n, allow_zero=True),
    "factor": lambda n: _call(n, flags.parse_float, "a number", minimum=1.0),
    "max_backoff": lambda n: _duration(n, allow_zero=True),
    "on_exit_codes": _exit_codes,
    "on_timeout": _as_bool,
    "on_rejected": _as_bool,
    "lost_retries": lambda n: _call(n, flags.parse_int, "an integer", minimum=0),
}


def _retry(node: _Node) -> _Fields:
    mapping = _check_keys(node, _RETRY_FIELDS)
    values = {k: _RETRY_FIELDS[k](v) for k, v in mapping.items() if v.value is not None}
    return {"retry": RetryPolicy(**values)}
