"""Job specs: names, and the JSON round trip the store relies on."""

from __future__ import annotations

import json

import pytest

from covey.errors import SpecError
from covey.spec import JobSpec, Mount, Resources, RetryPolicy, SecretRef, validate_name

FULL = JobSpec(
    image="registry.example.com/team/tool:1.2@sha256:" + "a" * 64,
    command=("sh", "-c", "echo 'hi' \"there\" ünï"),
    entrypoint=(),
    env=(("A", "1"), ("B", ""), ("A", "2"), ("EQ", "x=y")),
    labels=(("team", "data"), ("empty", "")),
    user="1000:1000",
    workdir="/work",
    networks=("front", "back"),
    secrets=(SecretRef("db"), SecretRef("api", "/etc/api.key")),
    mounts=(
        Mount("bind", "/in", "/data/in", read_only=True),
        Mount("volume", "/cache", "cache"),
        Mount("volume", "/anon"),
        Mount("tmpfs", "/tmp"),
    ),
    constraints=("node.role==worker", "node.labels.zone!=b"),
    resources=Resources(500_000_000, 64 * 1024**2, 2_000_000_000, 1024**3),
    name="square-7",
    timeout=300.0,
    pending_timeout=0.25,
    stop_grace_period=10.5,
    retry=RetryPolicy(
        attempts=5,
        backoff=0.1,
        factor=1.7,
        max_backoff=42.0,
        on_exit_codes=(75, 76),
        on_timeout=True,
        on_rejected=True,
        lost_retries=0,
    ),
    index=7,
    item="8",
)


def test_json_round_trip_of_a_fully_populated_spec() -> None:
    text = FULL.to_json()
    assert JobSpec.from_json(text) == FULL
    assert text == json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)


def test_json_round_trip_of_a_minimal_spec_is_compact() -> None:
    spec = JobSpec(image="busybox")
    assert spec.to_json() == '{"image":"busybox"}'
    assert JobSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec(image="x", entrypoint=()),
        JobSpec(image="x", retry=RetryPolicy(on_exit_codes=())),
        JobSpec(image="x", retry=RetryPolicy(attempts=2)),
        JobSpec(image="x", resources=Resources(limit_memory=1)),
        JobSpec(image="x", index=0, item=""),
        JobSpec(image="x", timeout=0.1 + 0.2),
    ],
)
def test_json_round_trip_edge_cases(spec: JobSpec) -> None:
    assert JobSpec.from_json(spec.to_json()) == spec


def test_json_is_stable() -> None:
    assert FULL.to_json() == JobSpec.from_json(FULL.to_json()).to_json()
    data = json.loads(FULL.to_json())
    assert list(data) == sorted(data)
    assert data["env"][0] == ["A", "1"]


def test_from_json_restores_tuples_and_types() -> None:
    spec = JobSpec.from_json(FULL.to_json())
    assert isinstance(spec.command, tuple)
    assert isinstance(spec.env[0], tuple)
    assert isinstance(spec.mounts[0], Mount)
    assert isinstance(spec.retry.on_exit_codes, tuple)
    assert isinstance(JobSpec.from_json('{"image":"x","timeout":5}').timeout, float)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[]", "expected an object"),
        ("{}", "image: missing"),
        ('{"image":"x","colour":1}', "unknown field 'colour'"),
        ('{"image":5}', "image: expected a string"),
        ('{"image":"x","command":"ls"}', "command: expected a list"),
        ('{"image":"x","env":[["A"]]}', "env[0]: expected a [key, value] pair"),
        ('{"image":"x","retry":{"attempts":"3"}}', "retry.attempts: expected an integer"),
        ('{"image":"x","retry":{"on_timeout":1}}', "retry.on_timeout: expected true or false"),
        ('{"image":"x","retry":{"bogus":1}}', "unknown field 'retry.bogus'"),
        ('{"image":"x","mounts":[{"type":"nfs","target":"/x"}]}', "mounts[0].type"),
        ('{"image":"x","mounts":[{"target":"/x"}]}', "mounts[0]: expected a mount"),
        ('{"image":"x","secrets":[{}]}', "secrets[0]: expected a secret"),
        ('{"image":"x","timeout":true}', "timeout: expected a number"),
    ],
)
def test_from_json_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        JobSpec.from_json(text)
    assert str(info.value).startswith("stored job spec: ")
    assert problem in str(info.value)


def test_env_dict_and_with_changes() -> None:
    assert FULL.env_dict == {"A": "2", "B": "", "EQ": "x=y"}
    assert FULL.labels_dict == {"team": "data", "empty": ""}
    changed = FULL.with_changes(name="other", index=None)
    assert changed.name == "other"
    assert changed.index is None
    assert changed.image == FULL.image
    assert FULL.name == "square-7"
    with pytest.raises(TypeError):
        FULL.with_changes(colour="red")


def test_specs_are_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        FULL.image = "other"  # type: ignore[misc]
    assert hash(FULL) == hash(JobSpec.from_json(FULL.to_json()))


@pytest.mark.parametrize("name", ["a", "A1", "job-1", "job_1.2", "0start", "x" * 63])
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        ("-lead", "is not a valid name"),
        (".lead", "is not a valid name"),
        ("has space", "is not a valid name"),
        ("slash/x", "is not a valid name"),
        ("ünï", "is not a valid name"),
        ("x" * 64, "longer than 63"),
    ],
)
def test_validate_name_rejects(name: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_name(name, what="--name")
    assert str(info.value).startswith("--name: ")
    assert problem in str(info.value)
