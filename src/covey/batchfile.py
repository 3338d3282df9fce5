"""Batch files: many jobs in one YAML file, each entry written like a compose service.

Every entry of ``jobs:`` is one stage of a :class:`~covey.pipeline.Pipeline`: one job, the
instances of a ``for_each``, or a fan-out over another job's output (``for_each: {output_of}``);
``needs`` and ``inputs`` make stages wait for each other and read each other's stdout.

The YAML is read as a node tree rather than plain data so that every value keeps the line it was
written on, through aliases, merge keys (``<<``) and ``defaults:`` merging: a user with a
thousand-line file needs ``FILE:LINE: jobs[2].deploy.resources.reservations.memory: ...``, not
"invalid size". Nothing is interpolated: ``$VAR`` in a command is for the job's shell.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
import yaml.constructor
import yaml.reader

from covey import flags
from covey.errors import SpecError
from covey.pipeline import (
    INPUTS_DIR,
    RESERVED_ENV,
    Condition,
    Need,
    Pipeline,
    Problem,
    Stage,
    check,
    instance,
)
from covey.spec import JobSpec, Mount, Resources, RetryPolicy, SecretRef, validate_name

MAX_JOBS = 100_000
"""More jobs than this in one batch is almost surely a for_each mistake (and a memory hazard)."""

_MAX_DEPTH = 64
_MAX_VALUES = 1_000_000  # aliases can make a small file expand exponentially
_MERGE_TAG = "tag:yaml.org,2002:merge"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Node:
    """A YAML value and where it was written: ``path`` is where it sits in the document."""

    value: object  # str | int | float | bool | None | dict[str, _Node] | list[_Node]
    line: int
    path: str
    key_line: int
    text: str = ""  # a scalar as written, so `user: 1000` or `- 010` stay what the user typed


class _Fail(Exception):
    """An error at a line; :func:`load_batch` adds the file name."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _fail(node: _Node, problem: str, *, at_key: bool = False) -> _Fail:
    where = f"{node.path}: " if node.path else ""
    return _Fail(node.key_line if at_key else node.line, where + problem)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- YAML to located nodes -----------------------------------------------------------------------


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _syntax_error(exc: yaml.YAMLError, text: str) -> _Fail:
    """PyYAML's error, reworded a little, at its line."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return _Fail(line, f"YAML syntax error: {exc.reason} (character #x{exc.character:04x})")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return _Fail(1, f"YAML syntax error: {exc}")
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and "single document" in exc.context:
        problem = "a second document (---); a batch file holds one"
    elif exc.context and exc.context_mark and exc.problem:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark else 1
    source = text.split("\n")[line - 1] if line <= text.count("\n") + 1 else ""
    if "\t" in source[: len(source) - len(source.lstrip())]:
        problem += "; YAML indents with spaces, not tabs"
    elif "<block end>" in problem or "indicator" in problem:
        problem += "; check the indentation"
    return _Fail(line, f"YAML syntax error: {problem}")


class _Reader:
    """Turns a composed YAML node graph into :class:`_Node` trees, keeping lines."""

    def __init__(self) -> None:
        self._constructor = yaml.constructor.SafeConstructor()
        self._count = 0

    def read(self, text: str) -> _Node | None:
        loader: yaml.SafeLoader | None = None
        try:
            loader = _Loader(text)
            root = loader.get_single_node()
            return None if root is None else self._build(root, "", 1, 0)
        except yaml.YAMLError as exc:
            raise _syntax_error(exc, text) from None
        finally:
            if loader is not None:
                loader.dispose()

    def _build(self, node: yaml.Node, path: str, key_line: int, depth: int) -> _Node:
        line = node.start_mark.line + 1
        self._count += 1
        if depth > _MAX_DEPTH or self._count > _MAX_VALUES:
            short = path if len(path) <= 60 else path[:60] + "..."
            raise _Fail(line, f"{short}: too deeply nested or too large (a recursive alias?)")
        if isinstance(node, yaml.ScalarNode):
            value = self._constructor.construct_object(node)
            if value is not None and not isinstance(value, str | int | float | bool):
                value = node.value  # timestamps and the like: keep the text
            return _Node(value, line, path, key_line, node.value)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            raise _Fail(line, f"{path or 'document'}: unsupported YAML tag {node.tag}")
        if isinstance(node, yaml.SequenceNode):
            items = [
                self._build(child, f"{path}[{i}]", child.start_mark.line + 1, depth + 1)
                for i, child in enumerate(node.value)
            ]
            return _Node(items, line, path, key_line)
        assert isinstance(node, yaml.MappingNode)
        return _Node(self._mapping(node, path, depth), line, path, key_line)

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, _Node]:
        """Keys in order; ``<<`` merge keys as YAML 1.1 says (own keys win, then earlier)."""
        merged: dict[str, _Node] = {}
        own: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    built = cast(dict[str, _Node], self._build(source, path, 0, depth + 1).value)
                    for key, child in built.items():
                        merged.setdefault(key, child)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Fail(key_line, f"{path or 'document'}: keys must be plain strings")
            key = str(key_node.value)
            if key in own:
                first = own[key].key_line
                raise _Fail(key_line, f"{_join(path, key)}: duplicate key (first at line {first})")
            own[key] = self._build(value_node, _join(path, key), key_line, depth + 1)
        return {**merged, **own}

    @staticmethod
    def _merge_sources(node: yaml.Node, path: str) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        line = node.start_mark.line + 1
        raise _Fail(line, f"{path or 'document'}: '<<' needs a mapping or a list of mappings")


# -- typed access --------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a mapping" if isinstance(value, dict) else "a list"


def _as_map(node: _Node) -> dict[str, _Node]:
    if not isinstance(node.value, dict):
        raise _fail(node, f"expected a mapping, got {_kind(node.value)}")
    return cast(dict[str, _Node], node.value)


def _as_list(node: _Node, what: str = "a list") -> list[_Node]:
    if not isinstance(node.value, list):
        raise _fail(node, f"expected {what}, got {_kind(node.value)}")
    return cast(list[_Node], node.value)


def _as_text(node: _Node, what: str = "a string") -> str:
    """A string; numbers are taken as written (``user: 1000``)."""
    if isinstance(node.value, str):
        return node.value
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.text
    hint = " (quote it)" if isinstance(node.value, bool) else ""
    raise _fail(node, f"expected {what}, got {_kind(node.value)}{hint}")


def _as_bool(node: _Node) -> bool:
    if not isinstance(node.value, bool):
        raise _fail(node, f"expected true or false, got {_kind(node.value)}")
    return node.value


def _call(node: _Node, parser: Callable[..., _T], expected: str, **kwargs: Any) -> _T:
    """Run a :mod:`covey.flags` parser on a scalar, its errors located at the node."""
    if node.value is None or isinstance(node.value, dict | list | bool):
        raise _fail(node, f"expected {expected}, got {_kind(node.value)}")
    try:
        return parser(node.value, what=node.path, **kwargs)
    except SpecError as exc:
        raise _Fail(node.line, str(exc)) from None


def _check(
    func: Callable[..., _T], node: _Node, *args: Any, what: str | None = None, **kwargs: Any
) -> _T:
    """Run a validator that raises :class:`SpecError`, its errors located at the node."""
    try:
        return func(*args, what=what or node.path, **kwargs)
    except SpecError as exc:
        raise _Fail(node.line, str(exc)) from None


def _check_keys(
    node: _Node,
    known: Mapping[str, object] | tuple[str, ...],
    hints: Mapping[str, str] | None = None,
    *,
    extensions: bool = False,
) -> dict[str, _Node]:
    """The mapping, once every key in it is known; unknown keys get a suggestion."""
    mapping = _as_map(node)
    for key, child in mapping.items():
        if key in known or (extensions and key.startswith("x-")):
            continue
        if hints and key in hints:
            raise _fail(child, f"not supported by covey ({hints[key]})", at_key=True)
        raise _fail(child, f"unknown key{flags.did_you_mean(key, known)}", at_key=True)
    return mapping


def _present(mapping: Mapping[str, _Node], key: str) -> _Node | None:
    """The value at ``key`` unless absent or null (null unsets, e.g. a default)."""
    node = mapping.get(key)
    return None if node is None or node.value is None else node


def _merge(base: _Node, over: _Node) -> _Node:
    """``over`` on top of ``base``: mappings merge deeply, anything else replaces."""
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    out = dict(cast(dict[str, _Node], base.value))
    for key, child in cast(dict[str, _Node], over.value).items():
        out[key] = _merge(out[key], child) if key in out else child
    return replace(over, value=out)


def _kv_to_map(node: _Node, empty: str | None) -> _Node:
    """List-form ``environment``/``labels`` (``K=V``) as a mapping, so defaults merge by key."""
    if not isinstance(node.value, list):
        return node
    out: dict[str, _Node] = {}
    for item in cast(list[_Node], node.value):
        key, sep, value = _as_text(item, "a KEY=VALUE string").partition("=")
        out[key] = replace(item, value=value if sep else empty, text=value if sep else "")
    return replace(node, value=out)


def _normalize(entry: _Node) -> _Node:
    mapping = dict(_as_map(entry))
    for key, empty in (("environment", None), ("labels", "")):
        if key in mapping:
            mapping[key] = _kv_to_map(mapping[key], empty)
    return replace(entry, value=mapping)


# -- the fields of one job -----------------------------------------------------------------------

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


# -- for_each ------------------------------------------------------------------------------------

_FOR_EACH_KEYS = ("range", "lines", "output_of")


def _matrix(node: _Node, base_dir: Path) -> list[str]:
    """The items a static ``for_each`` fans out over, as the strings ``COVEY_ITEM`` will hold."""
    if isinstance(node.value, list):
        items = [_scalar_item(item) for item in cast(list[_Node], node.value)]
    elif isinstance(node.value, dict):
        mapping = _check_keys(node, _FOR_EACH_KEYS)
        if len(mapping) != 1:
            raise _fail(node, "give exactly one of range, lines or output_of")
        if "range" in mapping:
            items = _range(mapping["range"])
        else:
            items = _lines(mapping["lines"], base_dir)
    else:
        got = _kind(node.value)
        forms = "a list, {range: [START, END]}, {lines: FILE} or {output_of: JOB}"
        raise _fail(node, f"expected {forms}, got {got}")
    if not items:
        raise _fail(node, "the matrix is empty: nothing to run")
    return items


def _scalar_item(node: _Node) -> str:
    if node.value is None or isinstance(node.value, dict | list):
        raise _fail(node, f"expected a scalar item, got {_kind(node.value)}")
    return node.value if isinstance(node.value, str) else node.text


def _range(node: _Node) -> list[str]:
    bounds = _as_list(node, "[START, END] or [START, END, STEP]")
    if len(bounds) not in (2, 3):
        raise _fail(node, "expected [START, END] or [START, END, STEP] (END excluded)")
    numbers = [_call(b, flags.parse_int, "an integer") for b in bounds]
    if len(numbers) == 3 and numbers[2] == 0:
        raise _fail(bounds[2], "step must not be 0")
    span = range(*numbers)
    if len(span) > MAX_JOBS:
        raise _fail(node, f"{len(span)} jobs is more than the limit of {MAX_JOBS}")
    return [str(i) for i in span]


def _lines(node: _Node, base_dir: Path) -> list[str]:
    path = base_dir / _as_text(node, "a file name")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise _fail(node, f"cannot read {path}: {reason or exc}") from None
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]


# -- pipelines: needs, inputs and for_each: {output_of} ------------------------------------------

_CONDITIONS = ", ".join(c.value for c in Condition)


@dataclass(frozen=True, slots=True)
class _Links:
    """How one entry hangs in the pipeline, and where each part of it was written, so that
    :func:`covey.pipeline.check`'s problems get a line: ``at["needs", NAME]`` (or ``"inputs"``)
    is the node naming NAME, ``source`` the ``for_each.output_of`` node."""

    needs: tuple[Need, ...]
    at: Mapping[tuple[str, str], _Node]
    items_from: str | None = None
    source: _Node | None = None

    @property
    def inputs(self) -> bool:
        return any(need.inputs for need in self.needs)


def _reference(node: _Node, key: str | None = None) -> str:
    """The name of another entry: the node's value, or ``key`` for a mapping's key. Names are
    checked like ``name:``, so ``jobs[N]`` (an unnamed entry) cannot be referenced."""
    name = _as_text(node, "a job name") if key is None else key
    return _check(validate_name, node, name)


def _condition(node: _Node) -> Condition:
    if not isinstance(node.value, str):
        raise _fail(node, f"expected a condition (one of {_CONDITIONS}), got {_kind(node.value)}")
    try:
        return Condition(node.value)
    except ValueError:
        raise _fail(node, f"'{node.value}' is not a condition (one of {_CONDITIONS})") from None


def _links(job: Mapping[str, _Node]) -> _Links:
    """An entry's ``needs``, ``inputs`` and ``for_each: {output_of}``, each checked on its own;
    the graph as a whole is checked once every entry is read."""
    conditions: dict[str, Condition] = {}
    at: dict[tuple[str, str], _Node] = {}
    needs = _present(job, "needs")
    if needs is not None and isinstance(needs.value, dict):
        for key, child in _as_map(needs).items():
            conditions[_reference(child, key)] = _condition(child)
            at["needs", key] = child
    elif needs is not None:
        for item in _as_list(needs, "a list of job names or a mapping of job name to condition"):
            name = _reference(item)
            if name in conditions:
                first = at["needs", name].line
                raise _fail(item, f"'{name}' is listed twice (first at line {first})")
            conditions[name] = Condition.SUCCEEDED
            at["needs", name] = item
    inputs = _present(job, "inputs")
    for item in [] if inputs is None else _as_list(inputs, "a list of job names"):
        name = _reference(item)
        if name not in conditions:
            why = "a job reads the output of what it waits for"
            raise _fail(item, f"'{name}' is not in needs ({why})")
        if ("inputs", name) in at:
            raise _fail(item, f"'{name}' is listed twice (first at line {at['inputs', name].line})")
        at["inputs", name] = item
    links = tuple(Need(k, c, ("inputs", k) in at) for k, c in conditions.items())
    source = _output_of(job)
    return _Links(links, at, None if source is None else _reference(source), source)


def _output_of(job: Mapping[str, _Node]) -> _Node | None:
    """The NAME node of ``for_each: {output_of: NAME}`` (None for the other forms)."""
    for_each = _present(job, "for_each")
    if for_each is None or not isinstance(for_each.value, dict):
        return None
    if "output_of" not in for_each.value:
        return None
    if len(_check_keys(for_each, _FOR_EACH_KEYS)) != 1:
        raise _fail(for_each, "give exactly one of range, lines or output_of")
    return _as_map(for_each)["output_of"]


def _instance_of(name: str) -> str | None:
    """The stage whose fan-out would name a job ``name`` (``count`` for ``count-3``)."""
    stage, sep, index = name.rpartition("-")
    if sep and index.isascii() and index.isdigit() and str(int(index)) == index:
        return stage
    return None


# -- the whole file ------------------------------------------------------------------------------

_JOB_HINTS = {
    "restart": "use 'retry'",
    "container_name": "use 'name'",
    "ports": "jobs publish no ports",
    "expose": "jobs publish no ports",
    "depends_on": "use 'needs'",
    "build": "build and push the image first",
    "healthcheck": "jobs run to completion",
    "mem_limit": "use deploy.resources.limits.memory",
    "mem_reservation": "use deploy.resources.reservations.memory",
    "cpus": "use deploy.resources.limits.cpus",
}
_JOB_KEYS = tuple(
    [
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "labels",
        "user",
        "working_dir",
        "networks",
        "secrets",
        "volumes",
        "deploy",
        "stop_grace_period",
        "name",
        "timeout",
        "pending_timeout",
        "retry",
        "registry_auth",
        "resolve_image",
        "priority",
        "for_each",
        "needs",
        "inputs",
    ]
)
_PER_JOB = ("name", "for_each", "needs", "inputs")


class _Batch:
    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = path.parent
        self.job = _Job(path.parent, environ)
        self.names: dict[str, _Node] = {}  # job and stage names, each at its entry's name node
        self.fan_outs: dict[str, _Node] = {}  # stages over output_of, whose jobs are NAME-i
        self.stages: list[Stage] = []
        self.links: list[_Links] = []
        self.entries: list[_Node] = []
        self.jobs = 0  # known up front (a fan-out over output_of counts when it happens)

    def load(self, text: str) -> Pipeline:
        root = _Reader().read(text)
        if root is None:
            raise _Fail(1, "the file is empty (expected 'jobs:' with a list of jobs)")
        if not isinstance(root.value, dict):
            got = _kind(root.value)
            raise _Fail(root.line, f"expected a mapping with 'jobs:' at the top level, got {got}")
        top = _check_keys(root, ("jobs", "defaults"), extensions=True)
        defaults = _present(top, "defaults")
        if defaults is not None:
            _check_keys(defaults, _JOB_KEYS, _JOB_HINTS, extensions=True)
            for key in _PER_JOB:
                if key in _as_map(defaults):
                    raise _fail(_as_map(defaults)[key], "not allowed in defaults", at_key=True)
            defaults = _normalize(defaults)
        jobs = top.get("jobs")
        if jobs is None:
            raise _Fail(root.line, "missing required key 'jobs'")
        if isinstance(jobs.value, dict):
            raise _fail(jobs, "expected a list of jobs ('- image: ...' entries), got a mapping")
        entries = _as_list(jobs, "a list of jobs")
        if not entries:
            raise _fail(jobs, "must not be empty")
        for entry in entries:
            _check_keys(entry, _JOB_KEYS, _JOB_HINTS, extensions=True)
            merged = _normalize(entry)
            if defaults is not None:
                merged = _merge(defaults, merged)
            self._add(entry, _as_map(merged))
        problems = check(self.stages)
        if problems:
            raise self._locate(problems[0])
        return Pipeline(self.stages)

    def _add(self, entry: _Node, job: dict[str, _Node]) -> None:
        """One entry as one stage: a job, its ``for_each`` instances, or a fan-out template."""
        if _present(job, "image") is None:
            raise _fail(entry, "missing required key 'image' (set it here or in defaults)")
        links = _links(job)
        spec = JobSpec(**self.job.fields(job))
        if links.inputs:
            spec = spec.with_changes(env=(*spec.env, ("COVEY_INPUTS", INPUTS_DIR)))
        name_node = _present(job, "name")
        name = None
        if name_node is not None:
            name = _check(validate_name, name_node, _as_text(name_node))
            self._claim(name, name_node)
        for_each = _present(job, "for_each")
        if for_each is not None and links.source is not None:
            specs: tuple[JobSpec, ...] = (self._template(spec, name, name_node, for_each),)
        elif for_each is not None:
            specs = self._instances(spec, name, name_node, for_each, entry)
        else:
            specs = (self._job(spec.with_changes(name=name), name_node, entry),)
        stage = name or f"jobs[{len(self.stages)}]"
        self.stages.append(Stage(stage, specs, links.needs, links.items_from))
        self.links.append(links)
        self.entries.append(entry)

    def _instances(
        self,
        spec: JobSpec,
        name: str | None,
        name_node: _Node | None,
        for_each: _Node,
        entry: _Node,
    ) -> tuple[JobSpec, ...]:
        items = _matrix(for_each, self.base_dir)
        if self.jobs + len(items) > MAX_JOBS:
            raise _fail(for_each, f"the batch would have more than {MAX_JOBS} jobs")
        if name_node is not None and name is not None:
            longest = f"{name}-{len(items) - 1}"
            _check(validate_name, name_node, longest, what=f"{name_node.path} (with index)")
        return tuple(
            self._job(instance(spec, name, index, item), name_node, entry)
            for index, item in enumerate(items)
        )

    def _template(
        self, spec: JobSpec, name: str | None, name_node: _Node | None, for_each: _Node
    ) -> JobSpec:
        """The one spec of a fan-out over another job's output; its jobs are made at run time."""
        if name is None or name_node is None:
            why = "its jobs are named NAME-0, NAME-1, ..."
            raise _fail(for_each, f"output_of needs the job to have a name ({why})")
        longest = f"{name}-{MAX_JOBS - 1}"
        _check(validate_name, name_node, longest, what=f"{name_node.path} (with index)")
        for other, node in self.names.items():
            if _instance_of(other) == name:
                where = f"at line {node.line}, {node.path}"
                raise _fail(
                    name_node,
                    f"its jobs are named {name}-0, {name}-1, ..., but '{other}' is taken ({where})",
                )
        self.fan_outs[name] = name_node
        return spec.with_changes(name=name)

    def _job(self, spec: JobSpec, name_node: _Node | None, entry: _Node) -> JobSpec:
        if spec.name is not None and name_node is not None:
            self._claim(spec.name, name_node)
        if self.jobs >= MAX_JOBS:
            raise _fail(entry, f"the batch would have more than {MAX_JOBS} jobs")
        self.jobs += 1
        return spec

    def _claim(self, name: str, node: _Node) -> None:
        """Take a job or stage name, unless another entry has it or will make it at run time."""
        first = self.names.setdefault(name, node)
        if first is not node:
            where = f"also at line {first.line}, {first.path}"
            raise _fail(node, f"duplicate job name '{name}' ({where})")
        stage = _instance_of(name)
        fan_out = None if stage is None else self.fan_outs.get(stage)
        if fan_out is not None:
            where = f"the fan-out at line {fan_out.line}, {fan_out.path}, names its jobs"
            raise _fail(node, f"duplicate job name '{name}' ({where} {stage}-0, {stage}-1, ...)")

    def _locate(self, problem: Problem) -> _Fail:
        """A problem :func:`covey.pipeline.check` found, at the need or output_of it is about."""
        links = self.links[problem.stage]
        if problem.key == "for_each" and links.source is not None:
            return _fail(links.source, problem.message.removeprefix("output_of: "))
        need = problem.need or ""
        node = links.at.get((problem.key, need)) or links.at.get(("needs", need))
        if node is None:  # check() names the need for these keys; this is a fallback only
            entry = self.entries[problem.stage]
            return _fail(entry, f"{problem.key}: {problem.message}")
        return _fail(node, problem.message, at_key=True)


def load_batch(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Pipeline:
    """The pipeline the batch file at ``path`` describes: one stage per entry of ``jobs:``
    (named by its ``name``, or ``jobs[N]``), static ``for_each`` expanded, in file order.

    ``pipeline.static_specs()`` are the jobs known up front; a stage over another job's output
    holds its one template instead. ``environ`` (default: the process environment) supplies
    values for bare ``KEY`` entries. Any problem, in one entry or in the graph of ``needs``,
    raises one :class:`SpecError` reading ``FILE:LINE: field.path: problem``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such batch file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8") from None
    try:
        return _Batch(path, os.environ if environ is None else environ).load(text)
    except _Fail as exc:
        raise SpecError(f"{path}:{exc.line}: {exc.message}") from None
