"""Parsers for values written the way docker and compose write them.

Users bring habits (and whole files) from ``docker service create`` and compose; accepting the
same spellings means nothing needs translating. Every parser takes ``what``, the flag or field
being parsed, and raises :class:`SpecError` that starts with it, so the CLI and the batch-file
loader report errors in the user's own terms.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from covey.errors import SpecError
from covey.records import NANO
from covey.spec import MOUNT_TYPES, Mount, MountType, SecretRef, validate_name

INT64_MAX = 2**63 - 1
RESERVED_LABEL_PREFIX = "covey."

Number = int | float


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else ``""``: typos deserve a pointer."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- numbers ------------------------------------------------------------------------------------


def parse_int(
    value: str | int,
    *,
    what: str = "value",
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An integer within bounds (counts, attempts, exit codes)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{what}: expected an integer, got {value!r}")
    try:
        number = int(value) if isinstance(value, int) else int(value.strip(), 10)
    except ValueError:
        raise SpecError(f"{what}: '{value}' is not an integer") from None
    if minimum is not None and number < minimum:
        raise SpecError(f"{what}: {number} is less than {minimum}")
    if maximum is not None and number > maximum:
        raise SpecError(f"{what}: {number} is more than {maximum}")
    return number


def parse_float(value: str | Number, *, what: str = "value", minimum: float | None = None) -> float:
    """A finite decimal number (e.g. the backoff factor)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{what}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"{what}: '{value}' is not a number") from None
    if not math.isfinite(number):
        raise SpecError(f"{what}: '{value}' is not a finite number")
    if minimum is not None and number < minimum:
        raise SpecError(f"{what}: {value} is less than {minimum:g}")
    return number


def parse_bool(value: str | bool, *, what: str = "value") -> bool:
    """true/false the way Go's strconv.ParseBool (and so docker) spells them, plus yes/no."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "t", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "n", "off"):
        return False
    raise SpecError(f"{what}: '{value}' is not true or false")


def parse_exit_code(value: str | int, *, what: str = "exit code") -> int:
    """A non-zero exit status (0 is success, so it is never worth retrying)."""
    return parse_int(value, what=what, minimum=1, maximum=255)


def parse_exit_codes(value: str, *, what: str = "--retry-on-exit") -> tuple[int, ...]:
    """Comma-separated exit codes, e.g. ``75,76``; duplicates dropped, order kept."""
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p for p in parts):
        raise SpecError(f"{what}: '{value}' is not a comma-separated list of exit codes")
    return tuple(dict.fromkeys(parse_exit_code(p, what=what) for p in parts))


# -- sizes, cpus, durations ----------------------------------------------------------------------

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+) ?(?:([kmgtp])i?)?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(value: str | Number, *, what: str = "size") -> int:
    """Bytes from ``512M``, ``2g``, ``1.5GiB``, ``64mb`` or a plain count; multiples of 1024."""
    bad = SpecError(f"{what}: '{value}' is not a size (examples: 512M, 2g, 1.5GiB, 1048576)")
    if isinstance(value, bool):
        raise bad
    if _is_number(value):
        value = str(value)
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    if text.startswith("-"):
        raise SpecError(f"{what}: '{value}' is negative")
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise bad
    number, unit = match.group(1), (match.group(2) or "").lower()
    size = int(Decimal(number) * 1024 ** _SIZE_UNITS[unit])
    if size > INT64_MAX:
        raise SpecError(f"{what}: '{value}' is too large")
    return size


_CPUS_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_cpus(value: str | Number, *, what: str = "cpus") -> int:
    """Nano CPUs from ``0.5``, ``2``, ``1.25``, as docker's ``--cpus`` (at most 9 decimals)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{what}: expected a number of CPUs, got {value!r}")
    text = str(value).strip()
    if text.startswith("-"):
        raise SpecError(f"{what}: '{value}' is negative")
    if not _CPUS_RE.fullmatch(text):
        raise SpecError(f"{what}: '{value}' is not a number of CPUs (examples: 0.5, 2, 1.25)")
    nano = Decimal(text) * NANO
    if nano != nano.to_integral_value():
        raise SpecError(f"{what}: '{value}' is too precise (at most 9 decimal places)")
    if nano <= 0:
        raise SpecError(f"{what}: must be more than 0")
    if nano > INT64_MAX:
        raise SpecError(f"{what}: '{value}' is too large")
    return int(nano)


_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # Go accepts both micro signs
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION_RE = re.compile(f"(?:{_DURATION_PART})+")
_DURATION_PART_RE = re.compile(_DURATION_PART)
_PLAIN_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(
    value: str | Number, *, what: str = "duration", allow_zero: bool = True
) -> float:
    """Seconds from Go/compose durations (``1h30m``, ``500ms``, ``1.5s``) or a bare number."""
    bad = SpecError(f"{what}: '{value}' is not a duration (examples: 90, 1.5s, 500ms, 5m, 1h30m)")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad
    text = str(value).strip()
    if text.startswith("-"):
        raise SpecError(f"{what}: '{value}' is negative")
    if _PLAIN_NUMBER_RE.fullmatch(text):
        seconds = Decimal(text)
    elif _DURATION_RE.fullmatch(text):
        seconds = sum(
            (Decimal(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text)),
            Decimal(0),
        )
    else:
        raise bad
    if not allow_zero and seconds == 0:
        raise SpecError(f"{what}: must be more than 0")
    return float(seconds)


# -- environment and labels ----------------------------------------------------------------------


def _check_key(key: str, *, what: str, kind: str) -> str:
    if not key:
        raise SpecError(f"{what}: {kind} name must not be empty")
    if any(c.isspace() for c in key):
        raise SpecError(f"{what}: {kind} name '{key}' contains whitespace")
    return key


def validate_env_key(key: str, *, what: str = "--env") -> str:
    """Environment variable names: non-empty, no whitespace, no ``=``."""
    _check_key(key, what=what, kind="variable")
    if "=" in key:
        raise SpecError(f"{what}: variable name '{key}' contains '='")
    return key


def parse_env(
    item: str, environ: Mapping[str, str], *, what: str = "--env"
) -> tuple[str, str] | None:
    """``KEY=VALUE``, ``KEY=``, or ``KEY`` copied from ``environ`` (None when unset, as docker)."""
    key, sep, value = item.partition("=")
    validate_env_key(key, what=what)
    if sep:
        return key, value
    if key in environ:
        return key, environ[key]
    return None


def parse_env_file(
    path: Path | str, environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Docker's ``--env-file`` format: no quoting, ``#`` comments, ``KEY`` alone from environ.

    ``environ`` defaults to the process environment; errors read ``PATH:LINE: problem``.
    """
    if environ is None:
        environ = os.environ
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read env file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path}:{bad_line}: not valid UTF-8") from None
    pairs: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key = key.strip()
        try:
            validate_env_key(key, what="env file")
        except SpecError as exc:
            problem = str(exc).removeprefix("env file: ")
            raise SpecError(f"{path}:{lineno}: {problem}") from None
        if sep:
            pairs.append((key, value))
        elif key in environ:
            pairs.append((key, environ[key]))
    return pairs


def validate_label_key(key: str, *, what: str = "--label") -> str:
    """Label names: non-empty, no whitespace, and not in covey's own ``covey.`` namespace."""
    _check_key(key, what=what, kind="label")
    if key.lower().startswith(RESERVED_LABEL_PREFIX):
        raise SpecError(f"{what}: label '{key}' is reserved (covey.* labels are covey's own)")
    return key


def parse_label(item: str, *, what: str = "--label") -> tuple[str, str]:
    """``key=value``, or ``key`` for an empty value."""
    key, _, value = item.partition("=")
    return validate_label_key(key, what=what), value


# -- mounts and secrets --------------------------------------------------------------------------


def build_mount(
    type: str,
    target: str | None,
    source: str | None = None,
    read_only: bool = False,
    *,
    what: str = "--mount",
) -> Mount:
    """The checks every mount spelling shares: absolute paths, a source only where it fits."""
    kind = type.lower()
    if kind not in MOUNT_TYPES:
        raise SpecError(f"{what}: mount type '{type}' is not supported (bind, volume or tmpfs)")
    mount_type: MountType = "bind" if kind == "bind" else "volume" if kind == "volume" else "tmpfs"
    if not target:
        raise SpecError(f"{what}: target is required")
    if not target.startswith("/"):
        raise SpecError(f"{what}: target '{target}' is not an absolute path")
    source = source or None
    if mount_type == "bind":
        if source is None:
            raise SpecError(f"{what}: a bind mount needs a source")
        if not source.startswith("/"):
            raise SpecError(f"{what}: bind source '{source}' is not an absolute path")
    elif mount_type == "volume" and source is not None:
        validate_name(source, what=f"{what}: volume name")
    elif mount_type == "tmpfs" and source is not None:
        raise SpecError(f"{what}: a tmpfs mount has no source")
    return Mount(type=mount_type, target=target, source=source, read_only=read_only)


_MOUNT_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "readonly": "readonly",
    "ro": "readonly",
}
_MOUNT_UNSUPPORTED = (
    "consistency",
    "bind-propagation",
    "bind-nonrecursive",
    "bind-recursive",
    "bind-create-src",
    "volume-driver",
    "volume-label",
    "volume-nocopy",
    "volume-opt",
    "volume-subpath",
    "tmpfs-size",
    "tmpfs-mode",
    "image-subpath",
)


def _csv_fields(value: str, *, what: str) -> list[str]:
    """Split docker's CSV option syntax (fields may be double-quoted)."""
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise SpecError(f"{what}: '{value}' is not valid CSV ({exc})") from None
    fields = [f.strip() for f in rows[0]] if rows else []
    if not fields or any(not f for f in fields):
        raise SpecError(f"{what}: '{value}' has an empty field")
    return fields


def parse_mount(value: str, *, what: str = "--mount") -> Mount:
    """Docker's ``--mount type=bind,source=/a,target=/b,readonly``."""
    options: dict[str, str] = {}
    for field in _csv_fields(value, what=what):
        raw_key, sep, val = field.partition("=")
        key = raw_key.strip().lower()
        if key in _MOUNT_UNSUPPORTED:
            raise SpecError(f"{what}: '{key}' is not supported by covey")
        if key not in _MOUNT_KEYS:
            hint = did_you_mean(key, _MOUNT_KEYS)
            raise SpecError(f"{what}: unknown key '{raw_key}'{hint}")
        if not sep and _MOUNT_KEYS[key] != "readonly":
            raise SpecError(f"{what}: '{field}' must be a key=value pair")
        options[_MOUNT_KEYS[key]] = val if sep else "true"
    read_only = parse_bool(options.get("readonly", "false"), what=f"{what}: readonly")
    return build_mount(
        options.get("type", "volume"),
        options.get("target"),
        options.get("source"),
        read_only,
        what=what,
    )


_VOLUME_MODES_UNSUPPORTED = (
    "z",
    "Z",
    "cached",
    "delegated",
    "consistent",
    "nocopy",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
)


def _volume_mode(mode: str, *, what: str) -> bool:
    """Read-only or not, from ``ro``/``rw`` (possibly among other, refused, options)."""
    read_only = False
    for option in mode.split(","):
        if option == "ro":
            read_only = True
        elif option == "rw":
            read_only = False
        elif option in _VOLUME_MODES_UNSUPPORTED:
            raise SpecError(f"{what}: volume option '{option}' is not supported by covey")
        else:
            raise SpecError(f"{what}: unknown volume option '{option}' (ro or rw)")
    return read_only


def parse_volume(
    value: str, *, what: str = "--volume", base_dir: Path | str | None = None
) -> Mount:
    """Compose's short syntax ``SRC:DST[:ro|rw]``, or ``DST`` alone for an anonymous volume.

    An absolute SRC is a bind mount, ``./x`` and ``../x`` are bind mounts resolved against
    ``base_dir`` (the batch file's directory), anything else names a volume. ``~`` is refused:
    the path is opened on whichever swarm node runs the job, not where covey runs.
    """
    parts = value.split(":")
    if len(parts) > 3 or any(not p for p in parts):
        raise SpecError(f"{what}: '{value}' is not SRC:DST[:ro|rw] or DST")
    if len(parts) == 1:
        return build_mount("volume", parts[0], what=what)
    source, target = parts[0], parts[1]
    read_only = _volume_mode(parts[2], what=what) if len(parts) == 3 else False
    if source.startswith("~"):
        raise SpecError(f"{what}: '{source}': '~' is not expanded, use an absolute path")
    if source == "." or source.startswith(("./", "../")) or source == "..":
        if base_dir is None:
            raise SpecError(f"{what}: relative path '{source}': use an absolute path")
        source = os.path.normpath(os.path.join(os.path.abspath(base_dir), source))
    kind = "bind" if source.startswith("/") else "volume"
    return build_mount(kind, target, source, read_only, what=what)


_SECRET_KEYS = {"source": "source", "src": "source", "target": "target"}


def parse_secret(value: str, *, what: str = "--secret") -> SecretRef:
    """A secret name, or docker's ``source=name,target=path``."""
    if "=" not in value and "," not in value:
        return SecretRef(source=validate_name(value.strip(), what=what))
    options: dict[str, str] = {}
    for field in _csv_fields(value, what=what):
        raw_key, sep, val = field.partition("=")
        key = raw_key.strip().lower()
        if key in ("uid", "gid", "mode"):
            raise SpecError(f"{what}: '{key}' is not supported by covey")
        if key not in _SECRET_KEYS:
            raise SpecError(f"{what}: unknown key '{raw_key}'{did_you_mean(key, _SECRET_KEYS)}")
        if not sep or not val:
            raise SpecError(f"{what}: '{field}' must be a key=value pair")
        options[_SECRET_KEYS[key]] = val
    if "source" not in options:
        raise SpecError(f"{what}: source is required")
    return SecretRef(
        source=validate_name(options["source"], what=f"{what}: source"),
        target=options.get("target"),
    )


# -- placement -----------------------------------------------------------------------------------

_CONSTRAINT_RE = re.compile(r"\s*(?P<key>[^=!\s]+)\s*(?P<op>==|!=)\s*(?P<value>.*?)\s*")
_CONSTRAINT_VALUE_RE = re.compile(r"[a-zA-Z0-9:\-_\s.*()?+\[\]\\^$|/]+")
_CONSTRAINT_KEYS = (
    "node.id",
    "node.hostname",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
)
_CONSTRAINT_PREFIXES = ("node.labels.", "engine.labels.")


def _constraint_key(key: str, *, what: str) -> str:
    lowered = key.lower()
    if lowered in _CONSTRAINT_KEYS:
        return lowered
    for prefix in _CONSTRAINT_PREFIXES:
        if lowered.startswith(prefix):
            if len(key) == len(prefix):
                raise SpecError(f"{what}: '{key}' needs a label name")
            return prefix + key[len(prefix) :]
    known = (*_CONSTRAINT_KEYS, *(p + "<name>" for p in _CONSTRAINT_PREFIXES))
    hint = did_you_mean(lowered, known)
    raise SpecError(f"{what}: unknown constraint key '{key}'{hint} (one of {', '.join(known)})")


def parse_constraint(value: str, *, what: str = "--constraint") -> str:
    """Swarm's ``<key>==<value>`` / ``<key>!=<value>``, normalized to no spaces."""
    match = _CONSTRAINT_RE.fullmatch(value)
    if not match:
        raise SpecError(f"{what}: '{value}' is not KEY==VALUE or KEY!=VALUE")
    key = _constraint_key(match["key"], what=what)
    op, val = match["op"], match["value"]
    if not val or "==" in val or "!=" in val or not _CONSTRAINT_VALUE_RE.fullmatch(val):
        raise SpecError(f"{what}: '{value}' has an invalid value '{val}'")
    if key == "node.role":
        if val.lower() not in ("manager", "worker"):
            raise SpecError(f"{what}: node.role is manager or worker, not '{val}'")
        val = val.lower()
    return f"{key}{op}{val}"


# -- image references ----------------------------------------------------------------------------
# Docker's reference grammar (github.com/distribution/reference, regexp.go and normalize.go):
# checked here so that a typo, or a file name given where an image belongs, fails at once with
# its flag or field named, instead of as a job the engine rejects (or one that waits forever).

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMOTE_RE = re.compile(f"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"(?P<alg>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):(?P<hex>.*)")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's known algorithms
_IMAGE_ID_RE = re.compile(r"[a-f0-9]{64}")
NAME_TOTAL_MAX = 255
BATCH_SUFFIXES = (".yaml", ".yml")


def image_problem(ref: str) -> str | None:
    """What is wrong with ``ref`` as a docker image reference, or ``None`` if nothing is.

    ``[HOST[:PORT]/]PATH[:TAG][@DIGEST]``: the first part is a registry host when it has a
    ``.`` or ``:``, is ``localhost`` or has capitals, as docker decides; path components
    are lower-case letters and digits joined by ``.``, ``_``, ``__`` or dashes.
    """
    if not ref:
        return "must not be empty"
    if any(c.isspace() for c in ref):
        return "contains whitespace"
    if _IMAGE_ID_RE.fullmatch(ref):
        return "a 64-character hex string is an image id, not a name (tag the image)"
    name, _, digest = ref.partition("@")
    if digest and not _is_digest(digest):
        return f"'{digest}' is not a digest (sha256: and 64 lower-case hex digits)"
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            return (
                f"'{tag}' is not a tag (up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-')"
            )
    return _name_problem(name)


def _is_digest(digest: str) -> bool:
    match = _DIGEST_RE.fullmatch(digest)
    size = _DIGEST_HEX.get(match["alg"]) if match else None
    return (
        match is not None
        and size is not None
        and bool(re.fullmatch(f"[0-9a-f]{{{size}}}", match["hex"]))
    )


def _name_problem(name: str) -> str | None:
    """The repository name, after docker's rule for telling a registry host from a path."""
    first, slash, rest = name.partition("/")
    remote = name
    if slash and (first == "localhost" or any(c in first for c in ".:") or first != first.lower()):
        if not _DOMAIN_RE.fullmatch(first):
            return f"'{first}' is not a registry host[:port]"
        remote = rest
    if remote != remote.lower():
        return f"repository name '{remote}' must be lower-case"
    if not _REMOTE_RE.fullmatch(remote):
        return (
            f"'{remote}' is not a repository name (lower-case letters and digits, "
            "separated by '/', '.', '_', '__' or '-')"
        )
    if len(name) > NAME_TOTAL_MAX:
        return f"the name is longer than {NAME_TOTAL_MAX} characters"
    return None


def parse_image(value: str, *, what: str = "IMAGE", file_hint: str | None = None) -> str:
    """``value`` if it is a valid image reference, else :class:`SpecError` naming ``what``.

    ``file_hint`` (e.g. ``covey submit -f {}``) is for an argument that may be a batch file
    given in the image's place: an existing file, or a name ending in ``.yaml``/``.yml``, is
    refused with that hint even where the grammar allows it (``jobs.yaml`` is a valid name).
    An image that happens to share its name with a file here can be given with its tag.
    """
    problem = image_problem(value)
    if file_hint is not None:
        is_file = _is_file(value)
        if is_file or value.lower().endswith(BATCH_SUFFIXES):
            kind = "is a file" if is_file else "looks like a batch file"
            raise SpecError(
                f"{what}: '{value}' {kind}, not an image; did you mean `{file_hint.format(value)}`?"
            )
    if problem is not None:
        raise SpecError(f"{what}: '{value}' is not a valid image reference: {problem}")
    return value


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


# -- other nodes' engines ------------------------------------------------------------------------

NODE_HOST_SCHEMES = ("unix://", "tcp://", "http://", "https://")


def parse_node_hosts(values: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """``--node-host`` values and ``COVEY_NODE_HOSTS`` (comma or space separated), in order,
    without repeats; each must be an engine address as ``DOCKER_HOST`` takes it."""
    found: list[str] = []
    listed = environ.get("COVEY_NODE_HOSTS", "").replace(",", " ").split()
    for what, raw in [("--node-host", v) for v in values] + [
        ("COVEY_NODE_HOSTS", v) for v in listed
    ]:
        value = raw.strip()
        if not value.startswith(NODE_HOST_SCHEMES) or value.endswith("://"):
            raise SpecError(
                f"{what}: {value!r} is not an engine address (unix:///path/docker.sock or"
                " tcp://HOST:PORT, as DOCKER_HOST takes it)"
            )
        if value not in found:
            found.append(value)
    return tuple(found)
