"""Registry credentials, found where the docker CLI finds them (``--with-registry-auth``).

The engine never reads the user's docker configuration: a swarm service pulls its image, on
whichever node runs it, with the credentials the client sent in ``X-Registry-Auth`` when it
created the service, and the distribution endpoint (tag -> digest) asks the registry with
the same header. So covey must find the credentials itself, and find the ones ``docker``
would use, or a ``docker login`` that works for ``docker service create`` would not work
for covey. The rules followed are the CLI's (``cli/config``, ``cli/config/configfile``,
``cli/config/credentials``, ``cli/command/registry.go``):

- the file is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; no file means
  no credentials, not an error;
- ``DOCKER_AUTH_CONFIG`` (the same JSON, for CI) is asked first, then the file;
- a registry's own helper (``credHelpers``), else the default store (``credsStore``), else
  the file's ``auths``; a helper that answers "not found" means anonymous, it does not fall
  back to ``auths``;
- Docker Hub's key is ``https://index.docker.io/v1/``, every other registry's its
  ``host[:port]``; ``auths`` keys written as URLs (``https://host:5000/v2/``) match by host.

Where the CLI would fail silently or oddly (an ``auths`` entry under ``docker.io`` instead of
the v1 URL, an unreadable ``DOCKER_AUTH_CONFIG``), covey is a little more forgiving or a
little more explicit; the docstrings below say where.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from covey.errors import CoveyError

HUB_REGISTRY = "docker.io"
HUB_SERVER = "https://index.docker.io/v1/"
"""The key Docker Hub's credentials are stored under, and what its helper is asked for."""
_HUB_NAMES = ("index.docker.io", "docker.io", "registry-1.docker.io")
"""Hosts also accepted as Hub keys; the CLI itself only looks for :data:`HUB_SERVER`."""
CONFIG_FILE = "config.json"
ENV_AUTH_CONFIG = "DOCKER_AUTH_CONFIG"
HELPER_PREFIX = "docker-credential-"
HELPER_TIMEOUT = 30.0
"""A helper may wait on a keychain or a network; longer than this, something is stuck."""
_TOKEN_USERNAME = "<token>"  # docker-credential-helpers: the secret is an identity token
_NOT_FOUND = "credentials not found"  # "... in native keychain", on stdout, exit 1
_MESSAGE_MAX = 300

_V = TypeVar("_V")


class CredentialsError(CoveyError):
    """The docker configuration or a credential helper failed: exit 125, as docker does.

    Not a :class:`~covey.errors.SpecError`: nothing the user typed is wrong; their docker
    setup is, and the message names the file or the helper to look at.
    """


@dataclass(frozen=True, repr=False)
class RegistryAuth:
    """Credentials for one registry, as the engine's ``X-Registry-Auth`` header carries them.

    Either ``username`` and ``password``, or an ``identity_token`` (an OAuth refresh token,
    e.g. from Docker Desktop's login), which the engine trades for a registry token itself.
    """

    registry: str
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None
    server_address: str = ""

    def header(self) -> str:
        """The ``X-Registry-Auth`` value: URL-safe base64 of the engine's ``AuthConfig`` JSON.

        The engine decodes it with Go's ``base64.URLEncoding`` (padding included, as the CLI
        writes it); empty fields are left out, as the CLI's ``omitempty`` does.
        """
        fields = {
            "username": self.username,
            "password": self.password,
            "serveraddress": self.server_address,
            "identitytoken": self.identity_token,
        }
        body = json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))
        return base64.urlsafe_b64encode(body.encode()).decode("ascii")

    def __repr__(self) -> str:
        """Secrets shown only as present or not: this object ends up in logs and tracebacks."""
        hidden = {"password": self.password, "identity_token": self.identity_token}
        secrets = ", ".join(f"{k}={'***' if v else None}" for k, v in hidden.items())
        return (
            f"RegistryAuth(registry={self.registry!r}, username={self.username!r}, {secrets}, "
            f"server_address={self.server_address!r})"
        )


def registry_of(image: str) -> str:
    """The registry host of an image reference, as docker normalizes it.

    distribution/reference's ``splitDockerDomain``: the part before the first ``/`` is a host
    when it has a ``.`` or ``:``, is ``localhost``, or has capitals (a path component may not);
    anything else lives on Docker Hub, and ``index.docker.io`` is Hub's old name for itself.
    The reference is assumed valid (:func:`covey.flags.image_problem` checked it).
    """
    name = image.partition("@")[0]  # a digest has no "/", but a tag's ":" must not confuse us
    first, slash, _ = name.partition("/")
    is_host = first == "localhost" or any(c in first for c in ".:") or first != first.lower()
    if not slash or not is_host or first == "index.docker.io":
        return HUB_REGISTRY
    return first


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``$HOME/.docker/config.json``, as cli/config does."""
    env = os.environ if environ is None else environ
    directory = env.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / CONFIG_FILE
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / CONFIG_FILE


def auth_for(image: str, *, environ: Mapping[str, str] | None = None) -> RegistryAuth | None:
    """The credentials ``docker`` would send for ``image``, or ``None`` to pull anonymously.

    ``environ`` stands for the process environment (``DOCKER_CONFIG``, ``HOME``,
    ``DOCKER_AUTH_CONFIG``, and ``PATH`` and the rest for a credential helper).
    Raises :class:`CredentialsError` for a broken config file or a failing helper.
    """
    return auth_for_registry(registry_of(image), environ=environ)


def auth_for_registry(
    registry: str, *, environ: Mapping[str, str] | None = None
) -> RegistryAuth | None:
    """:func:`auth_for` for a registry host (as :func:`registry_of` gives it).

    A batch with many images on one registry asks once: a helper may be slow, or prompt.
    """
    env = os.environ if environ is None else environ
    key = HUB_SERVER if registry in (HUB_REGISTRY, "index.docker.io") else registry
    found = _lookup(_env_auths(env), key)
    if found is not None:
        return _from_entry(registry, *found, source=ENV_AUTH_CONFIG)
    path = config_path(env)
    config = _load(path)
    helpers = _mapping(config, "credHelpers", path)
    helper = _lookup(helpers, key)
    store = helper[1] if helper is not None else config.get("credsStore")
    if store:
        if not isinstance(store, str):
            raise CredentialsError(f"docker config {path}: a credential helper name is a string")
        return _from_helper(registry, store, key, environ)
    found = _lookup(_mapping(config, "auths", path), key)
    return _from_entry(registry, *found, source=str(path)) if found is not None else None


async def resolve_auth(
    image: str, *, environ: Mapping[str, str] | None = None
) -> RegistryAuth | None:
    """:func:`auth_for` in a worker thread: a helper is a program, and may take seconds.

    Abandoned on cancellation, so Ctrl-C is not held up by a helper waiting on a keychain;
    the helper itself is killed by its own timeout.
    """
    return await anyio.to_thread.run_sync(
        functools.partial(auth_for, image, environ=environ), abandon_on_cancel=True
    )


# -- the config file ------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    """The config file as a dict; ``{}`` when it does not exist or is empty (the CLI's EOF)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialsError(f"cannot read docker config {path}: {why}") from None
    return _parse(text, f"docker config {path}")


def _parse(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CredentialsError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix it, or run `docker login` again"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{what} is not a JSON object")
    return data


def _env_auths(env: Mapping[str, str]) -> dict[str, Any]:
    """``DOCKER_AUTH_CONFIG``'s ``auths`` (docker CLI 28+), looked in before the file.

    The CLI ignores a value it cannot parse; covey says so, since a variable set on purpose
    and silently not used would mean anonymous pulls that fail far from the cause.
    """
    value = env.get(ENV_AUTH_CONFIG)
    if not value:
        return {}
    return _mapping(_parse(value, ENV_AUTH_CONFIG), "auths", ENV_AUTH_CONFIG)


def _mapping(config: Mapping[str, Any], field: str, source: object) -> dict[str, Any]:
    """``config[field]`` as a dict; absent or ``null`` is empty, anything else is an error."""
    value = config.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CredentialsError(f"{source}: '{field}' is not a JSON object")
    return value


def _lookup(entries: Mapping[str, _V], key: str) -> tuple[str, _V] | None:
    """The entry stored under ``key``, else the first whose key names the same host.

    The CLI matches a key exactly, then (``auths`` only) by ``ConvertToHostname``; covey also
    matches helpers by host, and for Hub accepts keys naming Hub's hosts (``docker.io``...),
    which the CLI would ignore and the user surely meant.
    """
    if key in entries:
        return key, entries[key]
    hosts = _HUB_NAMES if key == HUB_SERVER else (key,)
    for host in hosts:
        for name, entry in entries.items():
            if _hostname(name).lower() == host.lower():
                return name, entry
    return None


def _hostname(key: str) -> str:
    """The CLI's ``ConvertToHostname``: ``https://host:5000/v2/`` -> ``host:5000``."""
    scheme, sep, rest = key.partition("://")
    if sep and scheme:
        netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        host = netloc.rpartition("@")[2]  # user info is not part of the host
        if host:
            return host
    return key.split("/", 1)[0]


def _from_entry(registry: str, key: str, entry: Any, *, source: str) -> RegistryAuth | None:
    """An ``auths`` entry: ``auth`` (base64 ``user:password``) wins over ``username`` and
    ``password``, as in the CLI's ``LoadFromReader``; an entry with neither nor an
    ``identitytoken`` (Docker Desktop leaves ``{}`` there for its store) is no credentials."""
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise CredentialsError(f"{source}: auths['{key}'] is not a JSON object")
    username, password = (
        _text(entry, "username", key, source),
        _text(entry, "password", key, source),
    )
    encoded = _text(entry, "auth", key, source)
    if encoded:
        username, password = _decode_auth(encoded, key, source)
    token = _text(entry, "identitytoken", key, source)
    if not (username or password or token):
        return None
    return RegistryAuth(registry, username or None, password or None, token or None, key)


def _text(entry: Mapping[str, Any], field: str, key: str, source: str) -> str:
    value = entry.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{source}: auths['{key}'].{field} is not a string")
    return value


def _decode_auth(encoded: str, key: str, source: str) -> tuple[str, str]:
    """``auth``: standard base64 of ``user:password``, split at the first ``:``.

    The error names the entry, never its value: it is a password.
    """
    bad = f"{source}: auths['{key}'].auth is not base64 of 'user:password'"
    try:
        padded = encoded.strip() + "=" * (-len(encoded.strip()) % 4)
        decoded = base64.b64decode(padded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(bad) from None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        raise CredentialsError(bad)
    return username, password.strip("\x00")


# -- credential helpers ---------------------------------------------------------------------------


def _from_helper(
    registry: str, name: str, server: str, environ: Mapping[str, str] | None
) -> RegistryAuth | None:
    """Ask ``docker-credential-<name> get`` for ``server``'s credentials.

    Its answer is ``{"ServerURL", "Username", "Secret"}``; Username ``<token>`` marks an
    identity token. "credentials not found" means anonymous, as in the CLI (which does not
    then look in ``auths``). The helper runs in ``environ`` when one is given: a keychain
    helper needs the session's variables (D-Bus, GPG agent), not covey's idea of them.
    """
    out = _run_helper(name, server, environ)
    if out is None:
        return None
    program = HELPER_PREFIX + name
    try:
        answer = json.loads(out)
    except json.JSONDecodeError:
        answer = None  # the output is not echoed: it may hold the secret
    if not isinstance(answer, dict):
        raise CredentialsError(f"credential helper {program} did not answer JSON for {server}")
    username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialsError(f"credential helper {program} answered non-text for {server}")
    if not (username or secret):
        return None
    if username == _TOKEN_USERNAME:
        return RegistryAuth(registry, identity_token=secret, server_address=server)
    return RegistryAuth(registry, username, secret or None, server_address=server)


def _run_helper(name: str, server: str, environ: Mapping[str, str] | None) -> str | None:
    """The helper's stdout, or ``None`` when it has no credentials for ``server``."""
    program = HELPER_PREFIX + name
    env = os.environ if environ is None else environ
    executable = shutil.which(program, path=env.get("PATH", os.defpath))
    if executable is None:
        raise CredentialsError(
            f"credential helper {program} (set in {config_path(environ)}) is not on PATH; "
            "install it, or change credsStore/credHelpers there"
        )
    try:
        done = subprocess.run(
            [executable, "get"],
            input=server,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=HELPER_TIMEOUT,
            env=None if environ is None else dict(environ),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialsError(
            f"credential helper {program} did not answer for {server} "
            f"within {HELPER_TIMEOUT:g} s (is it waiting for a keychain to be unlocked?)"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"credential helper {program} cannot run: {exc}") from None
    if done.returncode == 0:
        return done.stdout
    if _NOT_FOUND in done.stdout.lower():
        return None
    said = " ".join((done.stdout.strip() or done.stderr.strip()).split())
    if len(said) > _MESSAGE_MAX:
        said = said[:_MESSAGE_MAX] + "..."
    raise CredentialsError(
        f"credential helper {program} failed for {server} (exit code {done.returncode})"
        + (f": {said}" if said else "")
    )
