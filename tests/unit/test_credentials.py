"""Registry credentials as the docker CLI finds them: config file, auths, helpers, header."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from covey import credentials
from covey.credentials import HUB_SERVER, CredentialsError, RegistryAuth, auth_for, registry_of
from covey.errors import CoveyError

DIGEST = "sha256:" + "a" * 64
HUB_KEYS = [HUB_SERVER, "index.docker.io", "docker.io", "registry-1.docker.io", "https://docker.io"]


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("busybox", "docker.io"),
        ("busybox:1", "docker.io"),
        ("library/busybox:1", "docker.io"),
        ("docker.io/library/busybox", "docker.io"),
        ("index.docker.io/library/busybox", "docker.io"),
        ("registry-1.docker.io/library/busybox", "registry-1.docker.io"),
        ("user/repo", "docker.io"),
        ("localhost/x", "localhost"),
        ("localhost:5000/x", "localhost:5000"),
        ("localhost:5000", "docker.io"),  # no "/": docker.io/library/localhost, tag 5000
        ("10.231.0.2:5000/covey-test/busybox:latest", "10.231.0.2:5000"),
        ("host:5000/a/b:tag@" + DIGEST, "host:5000"),
        ("ghcr.io/a/b@" + DIGEST, "ghcr.io"),
        ("busybox@" + DIGEST, "docker.io"),
        ("[::1]:5000/x", "[::1]:5000"),
        ("Foo/bar", "Foo"),  # capitals cannot be a path component: docker takes it as a host
        ("foo_bar/baz", "docker.io"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


# -- helpers for the tests ----------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _env(tmp_path: Path, config: object | None = None, **extra: str) -> dict[str, str]:
    """An environment whose docker config dir is tmp_path/docker, holding ``config``."""
    directory = tmp_path / "docker"
    directory.mkdir(exist_ok=True)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "config.json").write_text(text)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    return {"DOCKER_CONFIG": str(directory), "PATH": path, **extra}


def _helper(tmp_path: Path, name: str, body: str) -> Path:
    """A fake ``docker-credential-<name>`` first on the test environment's PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


# Echoes the server URL it was asked for as the username, so tests see what it got on stdin.
ECHO_HELPER = """server=$(cat)
[ "$1" = get ] || exit 3
printf '{"ServerURL":"%s","Username":"%s","Secret":"s3cret"}' "$server" "$server"
"""
TOKEN_HELPER = """cat >/dev/null
printf '{"ServerURL":"x","Username":"<token>","Secret":"refresh-me"}'
"""
NOT_FOUND_HELPER = """cat >/dev/null
echo "credentials not found in native keychain"
exit 1
"""
FAILING_HELPER = """cat >/dev/null
echo "error: the keyring is locked" >&2
exit 2
"""


def _decoded(header: str) -> object:
    return json.loads(base64.urlsafe_b64decode(header))


# -- the config file ----------------------------------------------------------------------------


def test_missing_file_means_no_credentials(tmp_path: Path) -> None:
    assert auth_for("ghcr.io/a/b", environ=_env(tmp_path)) is None


def test_empty_file_means_no_credentials(tmp_path: Path) -> None:
    assert auth_for("ghcr.io/a/b", environ=_env(tmp_path, "")) is None


def test_config_under_home_when_docker_config_is_unset(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    config = {"auths": {"ghcr.io": {"auth": _b64("u:p")}}}
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(config))
    env = {"HOME": str(tmp_path), "DOCKER_CONFIG": ""}
    assert credentials.config_path(env) == tmp_path / ".docker" / "config.json"
    auth = auth_for("ghcr.io/a/b", environ=env)
    assert auth is not None and auth.username == "u"


def test_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path, {"auths": {"ghcr.io": {"auth": _b64("u:p")}}})
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    auth = auth_for("ghcr.io/a/b")
    assert auth is not None and auth.password == "p"


def test_bad_json_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    env = _env(tmp_path, '{"auths": {')
    with pytest.raises(CredentialsError) as caught:
        auth_for("busybox", environ=env)
    message = str(caught.value)
    assert str(tmp_path / "docker" / "config.json") in message
    assert "not valid JSON" in message and "\n" not in message
    assert isinstance(caught.value, CoveyError) and caught.value.exit_code == 125


@pytest.mark.parametrize(
    "config",
    [[], {"auths": []}, {"auths": {"ghcr.io": "x"}}, {"auths": {"ghcr.io": {"auth": 1}}}],
)
def test_wrong_shapes_are_errors_naming_the_file(tmp_path: Path, config: object) -> None:
    with pytest.raises(CredentialsError, match=r"config\.json"):
        auth_for("ghcr.io/a/b", environ=_env(tmp_path, config))


# -- auths --------------------------------------------------------------------------------------


def test_auth_is_base64_user_colon_password_split_at_the_first_colon(tmp_path: Path) -> None:
    env = _env(tmp_path, {"auths": {"ghcr.io": {"auth": _b64("alice:pa:ss")}}})
    auth = auth_for("ghcr.io/a/b:1", environ=env)
    assert auth == RegistryAuth("ghcr.io", "alice", "pa:ss", None, "ghcr.io")


def test_auth_wins_over_username_and_password(tmp_path: Path) -> None:
    entry = {"auth": _b64("alice:one"), "username": "bob", "password": "two"}
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, {"auths": {"ghcr.io": entry}}))
    assert auth is not None and (auth.username, auth.password) == ("alice", "one")


def test_username_and_password_fields(tmp_path: Path) -> None:
    entry = {"username": "bob", "password": "two"}
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, {"auths": {"ghcr.io": entry}}))
    assert auth is not None and (auth.username, auth.password) == ("bob", "two")


def test_identity_token(tmp_path: Path) -> None:
    entry = {"identitytoken": "tok"}
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, {"auths": {"ghcr.io": entry}}))
    assert auth == RegistryAuth("ghcr.io", identity_token="tok", server_address="ghcr.io")
    assert _decoded(auth.header()) == {"identitytoken": "tok", "serveraddress": "ghcr.io"}


@pytest.mark.parametrize("encoded", ["not base64!", _b64("no-colon"), _b64(":nouser")])
def test_bad_auth_is_an_error_that_does_not_echo_it(tmp_path: Path, encoded: str) -> None:
    env = _env(tmp_path, {"auths": {"ghcr.io": {"auth": encoded}}})
    with pytest.raises(CredentialsError, match=r"auths\['ghcr.io'\].auth") as caught:
        auth_for("ghcr.io/a", environ=env)
    assert encoded not in str(caught.value)


def test_unpadded_auth_is_accepted(tmp_path: Path) -> None:
    env = _env(tmp_path, {"auths": {"ghcr.io": {"auth": _b64("ab:c").rstrip("=")}}})
    auth = auth_for("ghcr.io/a", environ=env)
    assert auth is not None and (auth.username, auth.password) == ("ab", "c")


def test_empty_entry_means_no_credentials(tmp_path: Path) -> None:
    assert auth_for("ghcr.io/a", environ=_env(tmp_path, {"auths": {"ghcr.io": {}}})) is None


def test_other_registries_do_not_match(tmp_path: Path) -> None:
    env = _env(tmp_path, {"auths": {"ghcr.io": {"auth": _b64("u:p")}, HUB_SERVER: {}}})
    assert auth_for("quay.io/a/b", environ=env) is None
    assert auth_for("ghcr.io:443/a/b", environ=env) is None


@pytest.mark.parametrize(
    "key",
    [
        "10.0.0.2:5000",
        "http://10.0.0.2:5000",
        "https://10.0.0.2:5000/v2/",
        "http://user@10.0.0.2:5000/v1/",
        "10.0.0.2:5000/some/path",
    ],
)
def test_keys_match_by_hostname(tmp_path: Path, key: str) -> None:
    env = _env(tmp_path, {"auths": {key: {"auth": _b64("u:p")}}})
    auth = auth_for("10.0.0.2:5000/covey-test/busybox:latest", environ=env)
    assert auth is not None
    assert (auth.registry, auth.username, auth.server_address) == ("10.0.0.2:5000", "u", key)


def test_exact_key_wins_over_a_hostname_match(tmp_path: Path) -> None:
    auths = {"https://ghcr.io/v2/": {"auth": _b64("url:1")}, "ghcr.io": {"auth": _b64("host:2")}}
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, {"auths": auths}))
    assert auth is not None and auth.username == "host"


@pytest.mark.parametrize("key", HUB_KEYS)
@pytest.mark.parametrize("image", ["busybox", "library/busybox:1", "docker.io/user/x"])
def test_hub_keys(tmp_path: Path, key: str, image: str) -> None:
    env = _env(tmp_path, {"auths": {key: {"auth": _b64("hubuser:pw")}}})
    auth = auth_for(image, environ=env)
    assert auth is not None
    assert (auth.registry, auth.username, auth.password) == ("docker.io", "hubuser", "pw")


def test_hub_v1_key_wins_over_its_aliases(tmp_path: Path) -> None:
    auths = {"docker.io": {"auth": _b64("alias:1")}, HUB_SERVER: {"auth": _b64("v1:2")}}
    auth = auth_for("busybox", environ=_env(tmp_path, {"auths": auths}))
    assert auth is not None and auth.username == "v1"
    assert auth.server_address == HUB_SERVER


def test_docker_auth_config_is_asked_before_the_file(tmp_path: Path) -> None:
    env_config = json.dumps({"auths": {"ghcr.io": {"auth": _b64("fromenv:1")}}})
    file_config = {
        "auths": {"ghcr.io": {"auth": _b64("fromfile:2")}, "quay.io": {"auth": _b64("q:3")}}
    }
    env = _env(tmp_path, file_config, DOCKER_AUTH_CONFIG=env_config)
    auth = auth_for("ghcr.io/a", environ=env)
    assert auth is not None and auth.username == "fromenv"
    fallback = auth_for("quay.io/a", environ=env)
    assert fallback is not None and fallback.username == "q"


def test_unreadable_docker_auth_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="DOCKER_AUTH_CONFIG is not valid JSON"):
        auth_for("ghcr.io/a", environ=_env(tmp_path, DOCKER_AUTH_CONFIG="{nope"))


# -- credential helpers -------------------------------------------------------------------------


def test_cred_helper_gets_the_hostname_on_stdin(tmp_path: Path) -> None:
    _helper(tmp_path, "echo", ECHO_HELPER)
    config = {"credHelpers": {"10.0.0.2:5000": "echo"}, "auths": {"10.0.0.2:5000": {}}}
    auth = auth_for("10.0.0.2:5000/a/b:1", environ=_env(tmp_path, config))
    assert auth == RegistryAuth("10.0.0.2:5000", "10.0.0.2:5000", "s3cret", None, "10.0.0.2:5000")


def test_hub_helper_gets_the_v1_url(tmp_path: Path) -> None:
    _helper(tmp_path, "echo", ECHO_HELPER)
    auth = auth_for("busybox", environ=_env(tmp_path, {"credsStore": "echo"}))
    assert auth is not None
    assert (auth.registry, auth.username, auth.server_address) == (
        "docker.io",
        HUB_SERVER,
        HUB_SERVER,
    )


def test_cred_helper_wins_over_creds_store_and_auths(tmp_path: Path) -> None:
    _helper(tmp_path, "echo", ECHO_HELPER)
    _helper(tmp_path, "broken", FAILING_HELPER)
    config = {
        "credsStore": "broken",
        "credHelpers": {"ghcr.io": "echo"},
        "auths": {"ghcr.io": {"auth": _b64("file:x")}},
    }
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, config))
    assert auth is not None and auth.username == "ghcr.io"


def test_creds_store_wins_over_auths(tmp_path: Path) -> None:
    _helper(tmp_path, "echo", ECHO_HELPER)
    config = {"credsStore": "echo", "auths": {"ghcr.io": {"auth": _b64("file:x")}}}
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, config))
    assert auth is not None and auth.password == "s3cret"


def test_helper_token_username_means_identity_token(tmp_path: Path) -> None:
    _helper(tmp_path, "tok", TOKEN_HELPER)
    auth = auth_for("ghcr.io/a", environ=_env(tmp_path, {"credsStore": "tok"}))
    assert auth == RegistryAuth("ghcr.io", identity_token="refresh-me", server_address="ghcr.io")


def test_helper_not_found_means_anonymous_without_falling_back_to_auths(tmp_path: Path) -> None:
    _helper(tmp_path, "none", NOT_FOUND_HELPER)
    config = {"credsStore": "none", "auths": {"ghcr.io": {"auth": _b64("file:x")}}}
    assert auth_for("ghcr.io/a", environ=_env(tmp_path, config)) is None


def test_failing_helper_is_an_error_with_its_message(tmp_path: Path) -> None:
    _helper(tmp_path, "broken", FAILING_HELPER)
    with pytest.raises(CredentialsError) as caught:
        auth_for("ghcr.io/a", environ=_env(tmp_path, {"credHelpers": {"ghcr.io": "broken"}}))
    message = str(caught.value)
    assert "docker-credential-broken" in message and "the keyring is locked" in message
    assert "exit code 2" in message and caught.value.exit_code == 125


def test_missing_helper_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"docker-credential-nosuch .*not on PATH"):
        auth_for("ghcr.io/a", environ=_env(tmp_path, {"credsStore": "nosuch"}))


def test_helper_answering_garbage_is_an_error(tmp_path: Path) -> None:
    _helper(tmp_path, "garbage", "cat >/dev/null\necho 'password=hunter2'\n")
    with pytest.raises(CredentialsError, match="did not answer JSON") as caught:
        auth_for("ghcr.io/a", environ=_env(tmp_path, {"credsStore": "garbage"}))
    assert "hunter2" not in str(caught.value)


def test_helper_timeout_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT", 0.2)
    _helper(tmp_path, "slow", "exec sleep 5\n")
    with pytest.raises(CredentialsError, match=r"did not answer .*within 0\.2 s"):
        auth_for("ghcr.io/a", environ=_env(tmp_path, {"credsStore": "slow"}))


async def test_resolve_auth_runs_the_lookup_in_a_thread(tmp_path: Path) -> None:
    _helper(tmp_path, "echo", ECHO_HELPER)
    auth = await credentials.resolve_auth(
        "ghcr.io/a", environ=_env(tmp_path, {"credsStore": "echo"})
    )
    assert auth is not None and auth.username == "ghcr.io"


# -- the header and the repr --------------------------------------------------------------------


def test_header_is_urlsafe_base64_of_the_engine_json() -> None:
    auth = RegistryAuth("ghcr.io", "alice", "p?>>?~", None, "ghcr.io")
    header = auth.header()  # standard base64 of this JSON has a "+"
    assert "+" not in header and "/" not in header
    assert _decoded(header) == {
        "username": "alice",
        "password": "p?>>?~",
        "serveraddress": "ghcr.io",
    }


def test_repr_hides_secrets() -> None:
    auth = RegistryAuth("ghcr.io", "alice", "hunter2", "tok3n", "ghcr.io")
    assert "hunter2" not in repr(auth) and "tok3n" not in repr(auth)
    assert "hunter2" not in str(auth)
    assert "alice" in repr(auth) and "password=***" in repr(auth)
    assert "identity_token=None" in repr(RegistryAuth("ghcr.io", "a", "b"))
