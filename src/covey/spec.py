"""The job spec: everything needed to (re)create one job's service, as immutable values.

Specs are stored as JSON so that a job can be retried or inspected long after the batch file or
command line that produced it is gone; hence the exact, stable round trip.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from covey.errors import SpecError

MountType = Literal["bind", "volume", "tmpfs"]
MOUNT_TYPES: tuple[MountType, ...] = ("bind", "volume", "tmpfs")

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
NAME_MAX = 63


def validate_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if Docker accepts it as an object name; names end up in service names."""
    if not name:
        raise SpecError(f"{what}: must not be empty")
    if len(name) > NAME_MAX:
        raise SpecError(f"{what}: '{name}' is longer than {NAME_MAX} characters")
    if not _NAME_RE.fullmatch(name):
        raise SpecError(
            f"{what}: '{name}' is not a valid name "
            "(letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Mount:
    """One ``--mount``; ``source`` is None for tmpfs and anonymous volumes."""

    type: MountType
    target: str
    source: str | None = None
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A swarm secret to expose to the job; ``target`` defaults to the secret's name."""

    source: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Resources:
    """Reservations steer scheduling; limits cap the container. 0 means unset."""

    reserve_nano_cpus: int = 0
    reserve_memory: int = 0
    limit_nano_cpus: int = 0
    limit_memory: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a finished job is run again; see :func:`covey.policy.decide`."""

    attempts: int = 1
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0
    on_exit_codes: tuple[int, ...] | None = None
    on_timeout: bool = False
    on_rejected: bool = False
    lost_retries: int = 3


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One one-shot container to run to completion."""

    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    workdir: str | None = None
    networks: tuple[str, ...] = ()
    secrets: tuple[SecretRef, ...] = ()
    mounts: tuple[Mount, ...] = ()
    constraints: tuple[str, ...] = ()
    resources: Resources = Resources()
    name: str | None = None
    timeout: float | None = None
    pending_timeout: float | None = None
    stop_grace_period: float | None = None
    retry: RetryPolicy = RetryPolicy()
    index: int | None = None
    item: str | None = None
    # send the docker CLI's credentials for the image's registry with the create, so every
    # node can pull a private image (``--with-registry-auth``)
    registry_auth: bool = False
    # pin the image's tag to one digest for the whole batch (``--no-resolve-image``: not)
    resolve_image: bool = True
    # among jobs that could start now, higher first (first in, first out within one)
    priority: int = 0

    @property
    def env_dict(self) -> dict[str, str]:
        """The environment as Docker applies it: a later duplicate wins."""
        return dict(self.env)

    @property
    def labels_dict(self) -> dict[str, str]:
        """The labels as a mapping: a later duplicate wins."""
        return dict(self.labels)

    def with_changes(self, **changes: Any) -> JobSpec:
        """A copy with some fields replaced (for_each fan-out, CLI overrides)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Compact, key-sorted JSON; fields at their default value are left out."""
        return json.dumps(_encode(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """The inverse of :meth:`to_json`; malformed input raises :class:`SpecError`."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"stored job spec: not valid JSON ({exc})") from None
        return _decode_spec(data)


# -- encoding ------------------------------------------------------------------------------------


def _encode(obj: Any) -> Any:
    """Dataclasses to dicts without their defaults, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            out[f.name] = _encode(value)
        return out
    if isinstance(obj, tuple):
        return [_encode(v) for v in obj]
    return obj


# -- decoding ------------------------------------------------------------------------------------

_T = TypeVar("_T")


def _bad(field: str, expected: str, value: Any) -> SpecError:
    return SpecError(f"stored job spec: {field}: expected {expected}, got {value!r}")


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _bad(field, "a string", value)
    return value


def _int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(field, "an integer", value)
    return value


def _float(value: Any, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(field, "a number", value)
    return float(value)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(field, "true or false", value)
    return value


def _dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "an object", value)
    return cast(dict[str, Any], value)


def _tuple(value: Any, field: str, item: Callable[[Any, str], _T]) -> tuple[_T, ...]:
    if not isinstance(value, list):
        raise _bad(field, "a list", value)
    return tuple(item(v, f"{field}[{i}]") for i, v in enumerate(value))


def _optional(item: Callable[[Any, str], _T]) -> Callable[[Any, str], _T | None]:
    def decode(value: Any, field: str) -> _T | None:
        return None if value is None else item(value, field)

    return decode


def _strs(value: Any, field: str) -> tuple[str, ...]:
    return _tuple(value, field, _str)


def _pair(value: Any, field: str) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2:
        raise _bad(field, "a [key, value] pair", value)
    return _str(value[0], field), _str(value[1], field)


def _pairs(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    return _tuple(value, field, _pair)


def _ints(value: Any, field: str) -> tuple[int, ...]:
    return _tuple(value, field, _int)


def _mount_type(value: Any, field: str) -> MountType:
    if value not in MOUNT_TYPES:
        raise _bad(field, "bind, volume or tmpfs", value)
    return cast(MountType, value)


_Decoders = dict[str, Callable[[Any, str], Any]]


def _fields(data: Any, field: str, decoders: _Decoders) -> dict[str, Any]:
    """Decode a JSON object field by field, refusing keys this version does not know."""
    obj = _dict(data, field)
    unknown = sorted(set(obj) - set(decoders))
    prefix = f"{field}." if field else ""
    if unknown:
        raise SpecError(f"stored job spec: unknown field '{prefix}{unknown[0]}'")
    return {k: decoders[k](v, prefix + k) for k, v in obj.items()}


def _mount(value: Any, field: str) -> Mount:
    kw = _fields(
        value,
        field,
        {"type": _mount_type, "target": _str, "source": _optional(_str), "read_only": _bool},
    )
    if "type" not in kw or "target" not in kw:
        raise _bad(field, "a mount with type and target", value)
    return Mount(**kw)


def _secret(value: Any, field: str) -> SecretRef:
    kw = _fields(value, field, {"source": _str, "target": _optional(_str)})
    if "source" not in kw:
        raise _bad(field, "a secret with a source", value)
    return SecretRef(**kw)


def _resources(value: Any, field: str) -> Resources:
    return Resources(**_fields(value, field, dict.fromkeys(_RESOURCE_FIELDS, _int)))


_RESOURCE_FIELDS = ("reserve_nano_cpus", "reserve_memory", "limit_nano_cpus", "limit_memory")


def _retry(value: Any, field: str) -> RetryPolicy:
    decoders: _Decoders = {
        "attempts": _int,
        "backoff": _float,
        "factor": _float,
        "max_backoff": _float,
        "on_exit_codes": _optional(_ints),
        "on_timeout": _bool,
        "on_rejected": _bool,
        "lost_retries": _int,
    }
    return RetryPolicy(**_fields(value, field, decoders))


_SPEC_DECODERS: _Decoders = {
    "image": _str,
    "command": _strs,
    "entrypoint": _optional(_strs),
    "env": _pairs,
    "labels": _pairs,
    "user": _optional(_str),
    "workdir": _optional(_str),
    "networks": _strs,
    "secrets": lambda v, f: _tuple(v, f, _secret),
    "mounts": lambda v, f: _tuple(v, f, _mount),
    "constraints": _strs,
    "resources": _resources,
    "name": _optional(_str),
    "timeout": _optional(_float),
    "pending_timeout": _optional(_float),
    "stop_grace_period": _optional(_float),
    "retry": _retry,
    "index": _optional(_int),
    "item": _optional(_str),
    "registry_auth": _bool,
    "resolve_image": _bool,
    "priority": _int,
}


def _decode_spec(data: Any) -> JobSpec:
    kw = _fields(data, "", _SPEC_DECODERS)
    if "image" not in kw:
        raise SpecError("stored job spec: image: missing")
    return JobSpec(**kw)
