"""Batch files: what they expand to, and that every error points at the right line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from covey import batchfile
from covey.batchfile import load_batch
from covey.errors import SpecError
from covey.pipeline import INPUTS_DIR, Condition, Need, Pipeline
from covey.spec import JobSpec, Mount, Resources, RetryPolicy, SecretRef

ENVIRON = {"HOME": "/home/me", "TOKEN": "s3cret"}

EXAMPLE = """\
defaults:
  image: busybox
  deploy: {resources: {reservations: {cpus: "0.5", memory: 64M}}}
  timeout: 5m
  retry: {attempts: 3, backoff: 2s, on_exit_codes: [75]}
jobs:
  - name: square
    command: ["sh", "-c", "echo $((COVEY_ITEM * COVEY_ITEM))"]
    for_each: {range: [1, 101]}
"""


def write(directory: Path, text: str, name: str = "batch.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def pipeline(directory: Path, text: str) -> Pipeline:
    return load_batch(write(directory, text), environ=ENVIRON)


def load(directory: Path, text: str) -> list[JobSpec]:
    return pipeline(directory, text).static_specs()


def error(directory: Path, text: str) -> str:
    path = write(directory, text)
    with pytest.raises(SpecError) as info:
        load_batch(path, environ=ENVIRON)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


# -- the example and the expansions --------------------------------------------------------------


def test_the_example_expands_to_100_jobs(tmp_path: Path) -> None:
    specs = load(tmp_path, EXAMPLE)
    assert len(specs) == 100
    first, last = specs[0], specs[-1]
    assert first.image == "busybox"
    assert first.command == ("sh", "-c", "echo $((COVEY_ITEM * COVEY_ITEM))")
    assert first.resources == Resources(reserve_nano_cpus=500_000_000, reserve_memory=64 * 1024**2)
    assert first.timeout == 300.0
    assert first.retry == RetryPolicy(attempts=3, backoff=2.0, on_exit_codes=(75,))
    assert (first.name, first.index, first.item) == ("square-0", 0, "1")
    assert first.env == (("COVEY_INDEX", "0"), ("COVEY_ITEM", "1"))
    assert (last.name, last.index, last.item) == ("square-99", 99, "100")
    assert last.env_dict == {"COVEY_INDEX": "99", "COVEY_ITEM": "100"}
    assert [s.item for s in specs] == [str(i) for i in range(1, 101)]
    assert len({s.name for s in specs}) == 100
    assert all(JobSpec.from_json(s.to_json()) == s for s in specs)


def test_a_job_with_every_field(tmp_path: Path) -> None:
    (tmp_path / "common.env").write_text("A=from-file\nB=file\nTOKEN\n", encoding="utf-8")
    (spec,) = load(
        tmp_path,
        """\
        jobs:
          - image: python:3.12
            name: everything
            command: python -c 'print("hi there")'
            entrypoint: ["/bin/sh", "-c"]
            env_file: common.env
            environment:
              B: override
              NUM: 010
              FLAG: yes
              HOME:
              MISSING:
            labels: [team=data, flag]
            user: 1000
            working_dir: /work
            networks: [front, back]
            secrets: [db, {source: api, target: /etc/api.key}]
            volumes:
              - /data/in:/in:ro
              - ./out:/out
              - cache:/cache
              - /scratch
              - {type: tmpfs, target: /tmp}
              - {source: /srv, target: /srv, read_only: true}
            deploy:
              resources:
                reservations: {cpus: 0.25, memory: 1g}
                limits: {cpus: "2", memory: 1.5GiB}
              placement:
                constraints: [node.role==worker, "node.labels.zone != b"]
            stop_grace_period: 1m30s
            timeout: 1h
            pending_timeout: 10m
            retry:
              attempts: 5
              backoff: 500ms
              factor: 1.5
              max_backoff: 1m
              on_exit_codes: [75, 76]
              on_timeout: true
              on_rejected: false
              lost_retries: 1
        """,
    )
    assert spec.name == "everything"
    assert spec.command == ("python", "-c", 'print("hi there")')
    assert spec.entrypoint == ("/bin/sh", "-c")
    assert spec.env == (
        ("A", "from-file"),
        ("B", "override"),
        ("TOKEN", "s3cret"),
        ("NUM", "010"),
        ("FLAG", "yes"),
        ("HOME", "/home/me"),
    )
    assert spec.labels == (("team", "data"), ("flag", ""))
    assert (spec.user, spec.workdir) == ("1000", "/work")
    assert spec.networks == ("front", "back")
    assert spec.secrets == (SecretRef("db"), SecretRef("api", "/etc/api.key"))
    assert spec.mounts == (
        Mount("bind", "/in", "/data/in", True),
        Mount("bind", "/out", str(tmp_path.resolve() / "out")),
        Mount("volume", "/cache", "cache"),
        Mount("volume", "/scratch"),
        Mount("tmpfs", "/tmp"),
        Mount("bind", "/srv", "/srv", True),
    )
    assert spec.resources == Resources(250_000_000, 1024**3, 2_000_000_000, 3 * 1024**3 // 2)
    assert spec.constraints == ("node.role==worker", "node.labels.zone!=b")
    assert (spec.stop_grace_period, spec.timeout, spec.pending_timeout) == (90.0, 3600.0, 600.0)
    assert spec.retry == RetryPolicy(5, 0.5, 1.5, 60.0, (75, 76), True, False, 1)
    assert (spec.index, spec.item) == (None, None)


def test_minimal_job_has_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "jobs: [{image: alpine}]") == [JobSpec(image="alpine")]


def test_command_forms(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        """\
        jobs:
          - {image: a, command: "echo 'a b' c"}
          - {image: a, command: [sleep, 5]}
          - {image: a, command: []}
          - {image: a, entrypoint: ""}
          - {image: a, entrypoint: []}
          - {image: a, command: null}
        """,
    )
    assert [s.command for s in specs] == [("echo", "a b", "c"), ("sleep", "5"), (), (), (), ()]
    assert [s.entrypoint for s in specs] == [None, None, None, (), (), None]


def test_defaults_merge_deeply_and_lists_replace(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        """\
        defaults:
          image: busybox
          command: [echo, default]
          environment: {A: "1", B: "2"}
          labels: [team=data]
          networks: [front]
          deploy:
            resources:
              reservations: {cpus: 1, memory: 1g}
            placement: {constraints: [node.role==worker]}
          retry: {attempts: 3, backoff: 1s}
        jobs:
          - name: plain
          - name: override
            image: alpine
            command: [echo, mine]
            environment: [B=two, C=3]
            labels: {team: ml, extra: x}
            networks: [back]
            deploy:
              resources:
                reservations: {memory: 2g}
                limits: {memory: 4g}
            retry: {attempts: 5}
          - name: unset
            command: null
            retry: null
        """,
    )
    plain, override, unset = specs
    assert plain.image == "busybox"
    assert plain.command == ("echo", "default")
    assert plain.env == (("A", "1"), ("B", "2"))
    assert plain.labels == (("team", "data"),)
    assert plain.resources == Resources(reserve_nano_cpus=10**9, reserve_memory=1024**3)
    assert plain.retry == RetryPolicy(attempts=3, backoff=1.0)
    assert override.image == "alpine"
    assert override.command == ("echo", "mine")
    assert override.env == (("A", "1"), ("B", "two"), ("C", "3"))
    assert override.labels == (("team", "ml"), ("extra", "x"))
    assert override.networks == ("back",)
    assert override.resources == Resources(
        reserve_nano_cpus=10**9, reserve_memory=2 * 1024**3, limit_memory=4 * 1024**3
    )
    assert override.constraints == ("node.role==worker",)
    assert override.retry == RetryPolicy(attempts=5, backoff=1.0)
    assert unset.command == ()
    assert unset.retry == RetryPolicy()


def test_for_each_list(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        """\
        jobs:
          - image: a
            environment: {MODE: fast}
            for_each: [red, 2, 3.50, true, "with space"]
        """,
    )
    assert [s.item for s in specs] == ["red", "2", "3.50", "true", "with space"]
    assert [s.index for s in specs] == [0, 1, 2, 3, 4]
    assert [s.name for s in specs] == [None] * 5
    assert specs[4].env == (("MODE", "fast"), ("COVEY_INDEX", "4"), ("COVEY_ITEM", "with space"))


@pytest.mark.parametrize(
    ("matrix", "items"),
    [
        ("{range: [0, 3]}", ["0", "1", "2"]),
        ("{range: [1, 10, 4]}", ["1", "5", "9"]),
        ("{range: [3, 0, -1]}", ["3", "2", "1"]),
        ("[x]", ["x"]),
    ],
)
def test_for_each_range(tmp_path: Path, matrix: str, items: list[str]) -> None:
    specs = load(tmp_path, f"jobs: [{{name: r, image: a, for_each: {matrix}}}]")
    assert [s.item for s in specs] == items
    assert [s.name for s in specs] == [f"r-{i}" for i in range(len(items))]


def test_for_each_lines(tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "files.txt").write_text(
        "a.csv\n\n  b c.csv\r\n   \nlast", encoding="utf-8"
    )
    specs = load(
        tmp_path,
        """\
        jobs:
          - image: a
            name: convert
            for_each: {lines: inputs/files.txt}
        """,
    )
    assert [s.item for s in specs] == ["a.csv", "  b c.csv", "last"]
    assert [s.name for s in specs] == ["convert-0", "convert-1", "convert-2"]
    assert specs[1].env_dict["COVEY_ITEM"] == "  b c.csv"


def test_several_entries_keep_file_order(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        """\
        jobs:
          - {name: first, image: a}
          - {name: fan, image: a, for_each: [x, y]}
          - {image: b}
        """,
    )
    assert [s.name for s in specs] == ["first", "fan-0", "fan-1", None]


def test_yaml_anchors_merge_keys_and_extensions(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        """\
        x-common: &common
          image: busybox
          environment: {A: "1"}
        jobs:
          - <<: *common
            name: one
          - <<: *common
            name: two
            image: alpine
        """,
    )
    assert [(s.name, s.image, s.env) for s in specs] == [
        ("one", "busybox", (("A", "1"),)),
        ("two", "alpine", (("A", "1"),)),
    ]


def test_env_file_forms(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=1\n", encoding="utf-8")
    (tmp_path / "b.env").write_text("A=2\nB=2\n", encoding="utf-8")
    specs = load(
        tmp_path,
        """\
        jobs:
          - {image: x, env_file: [a.env, b.env]}
          - {image: x, env_file: [{path: a.env}, {path: nope.env, required: false}]}
        """,
    )
    assert specs[0].env == (("A", "2"), ("B", "2"))
    assert specs[1].env == (("A", "1"),)


def test_networks_as_a_mapping(tmp_path: Path) -> None:
    (spec,) = load(tmp_path, "jobs: [{image: x, networks: {front: null, back: {}}}]")
    assert spec.networks == ("front", "back")


def test_path_may_be_a_string_and_environ_defaults_to_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_TEST_VALUE", "from-os")
    path = write(tmp_path, "jobs: [{image: x, environment: [COVEY_TEST_VALUE]}]")
    (spec,) = load_batch(str(path)).static_specs()
    assert spec.env == (("COVEY_TEST_VALUE", "from-os"),)


# -- errors, each at its line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys, with a suggestion
        (
            "jobs:\n  - image: a\n    comand: ls\n",
            "3: jobs[0].comand: unknown key (did you mean 'command'?)",
        ),
        ("jobz: []\n", "1: jobz: unknown key (did you mean 'jobs'?)"),
        (
            "jobs:\n  - image: a\n    deploy:\n      resources:\n        reservation: {cpus: 1}\n",
            "5: jobs[0].deploy.resources.reservation: unknown key (did you mean 'reservations'?)",
        ),
        (
            "jobs:\n  - image: a\n    retry: {attempts: 2, on_exit: [1]}\n",
            "3: jobs[0].retry.on_exit: unknown key (did you mean 'on_exit_codes'?)",
        ),
        (
            "jobs:\n  - image: a\n    restart: on-failure\n",
            "3: jobs[0].restart: not supported by covey (use 'retry')",
        ),
        (
            "jobs:\n  - image: a\n    deploy: {replicas: 3}\n",
            "3: jobs[0].deploy.replicas: not supported by covey (a job runs exactly one task)",
        ),
        # wrong types
        (
            "jobs:\n  - image: a\n    command: 5\n",
            "3: jobs[0].command: expected a string or a list of strings, got a number",
        ),
        (
            "jobs:\n  - image: a\n    retry: yes\n",
            "3: jobs[0].retry: expected a mapping, got a boolean",
        ),
        (
            "jobs:\n  - image: a\n    retry: {on_timeout: 1}\n",
            "3: jobs[0].retry.on_timeout: expected true or false, got a number",
        ),
        (
            "jobs:\n  - image: a\n    user: yes\n",
            "3: jobs[0].user: expected a string, got a boolean (quote it)",
        ),
        ("jobs:\n  - image: [a]\n", "2: jobs[0].image: expected a string, got a list"),
        (
            "jobs:\n  - image: a\n  - image: MyImage:1\n",
            "3: jobs[1].image: 'MyImage:1' is not a valid image reference: repository name "
            "'MyImage' must be lower-case",
        ),
        (
            "defaults:\n  image: 'busybox:'\njobs: [{}]\n",
            "2: defaults.image: 'busybox:' is not a valid image reference: '' is not a tag",
        ),
        (
            "jobs:\n  - image: a\n    volumes: /x:/y\n",
            "3: jobs[0].volumes: expected a list, got a string",
        ),
        (
            "jobs:\n  - image: a\n    environment: 5\n",
            "3: jobs[0].environment: expected a mapping, got a number",
        ),
        (
            "jobs: {a: {image: x}}\n",
            "1: jobs: expected a list of jobs ('- image: ...' entries), got a mapping",
        ),
        ("jobs:\n  - image: a\n  - 5\n", "3: jobs[1]: expected a mapping, got a number"),
        ("jobs:\n  -\n", "2: jobs[0]: expected a mapping, got null"),
        # missing and empty
        (
            "jobs:\n  - name: a\n    command: ls\n",
            "2: jobs[0]: missing required key 'image' (set it here or in defaults)",
        ),
        ("defaults: {}\n", "1: missing required key 'jobs'"),
        ("jobs: []\n", "1: jobs: must not be empty"),
        ("", "1: the file is empty (expected 'jobs:' with a list of jobs)"),
        ("- image: a\n", "1: expected a mapping with 'jobs:' at the top level, got a list"),
        # bad values
        (
            "jobs:\n  - image: a\n    deploy:\n      resources:\n"
            "        reservations:\n          memory: 12Q\n",
            "6: jobs[0].deploy.resources.reservations.memory: '12Q' is not a size "
            "(examples: 512M, 2g, 1.5GiB, 1048576)",
        ),
        (
            "jobs:\n  - image: a\n    timeout: 5 minutes\n",
            "3: jobs[0].timeout: '5 minutes' is not a duration",
        ),
        ("jobs:\n  - image: a\n    timeout: 0\n", "3: jobs[0].timeout: must be more than 0"),
        (
            "jobs:\n  - image: a\n    retry: {attempts: 0}\n",
            "3: jobs[0].retry.attempts: 0 is less than 1",
        ),
        (
            "jobs:\n  - image: a\n    retry: {on_exit_codes: []}\n",
            "3: jobs[0].retry.on_exit_codes: empty list",
        ),
        (
            "jobs:\n  - image: a\n    retry:\n      on_exit_codes:\n        - 75\n        - 0\n",
            "6: jobs[0].retry.on_exit_codes[1]: 0 is less than 1",
        ),
        (
            "jobs:\n  - image: a\n    labels: {covey.job: x}\n",
            "3: jobs[0].labels.covey.job: label 'covey.job' is reserved",
        ),
        (
            "jobs:\n  - image: a\n    environment:\n      - =x\n",
            "4: jobs[0].environment[0]: variable name must not be empty",
        ),
        (
            "jobs:\n  - image: a\n    environment: {COVEY_ITEM: x}\n",
            "3: jobs[0].environment.COVEY_ITEM: COVEY_ITEM is set by covey",
        ),
        (
            "jobs:\n  - image: a\n    working_dir: work\n",
            "3: jobs[0].working_dir: 'work' is not an absolute path",
        ),
        (
            "jobs:\n  - image: a\n    volumes:\n      - ~/x:/x\n",
            "4: jobs[0].volumes[0]: '~/x': '~' is not expanded",
        ),
        (
            "jobs:\n  - image: a\n    volumes:\n      - {type: bind, target: /x}\n",
            "4: jobs[0].volumes[0]: a bind mount needs a source",
        ),
        ('jobs:\n  - image: a\n    command: "echo \'oops"\n', "3: jobs[0].command: cannot split"),
        (
            "jobs:\n  - image: a\n    secrets: [{target: /x}]\n",
            "3: jobs[0].secrets[0]: source is required",
        ),
        (
            "jobs:\n  - image: a\n    networks: {front: {aliases: [x]}}\n",
            "3: jobs[0].networks.front: network options",
        ),
        (
            "jobs:\n  - image: a\n    deploy:\n      placement:\n"
            "        constraints:\n          - node.role=manager\n",
            "6: jobs[0].deploy.placement.constraints[0]: 'node.role=manager' is not KEY==VALUE",
        ),
        ("jobs:\n  - image: a\n    name: -bad\n", "3: jobs[0].name: '-bad' is not a valid name"),
        ("jobs:\n  - image: a\n    env_file: nope.env\n", "3: jobs[0].env_file: "),
        # for_each
        (
            "jobs:\n  - image: a\n    for_each: []\n",
            "3: jobs[0].for_each: the matrix is empty: nothing to run",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {range: [5, 1]}\n",
            "3: jobs[0].for_each: the matrix is empty",
        ),
        (
            "jobs:\n  - image: a\n    for_each:\n      range: [1, 5, 0]\n",
            "4: jobs[0].for_each.range[2]: step must not be 0",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {range: [1]}\n",
            "3: jobs[0].for_each.range: expected [START, END]",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {range: [a, 3]}\n",
            "3: jobs[0].for_each.range[0]: 'a' is not an integer",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {range: [0, 2], lines: x}\n",
            "3: jobs[0].for_each: give exactly one",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {rnage: [0, 2]}\n",
            "3: jobs[0].for_each.rnage: unknown key (did you mean 'range'?)",
        ),
        (
            "jobs:\n  - image: a\n    for_each: [[1]]\n",
            "3: jobs[0].for_each[0]: expected a scalar item, got a list",
        ),
        ("jobs:\n  - image: a\n    for_each: 5\n", "3: jobs[0].for_each: expected a list"),
        (
            "jobs:\n  - image: a\n    for_each: {lines: missing.txt}\n",
            "3: jobs[0].for_each.lines: cannot read",
        ),
        (
            "jobs:\n  - image: a\n    for_each: {range: [0, 100001]}\n",
            "3: jobs[0].for_each.range: 100001 jobs is more than the limit",
        ),
        (
            "jobs:\n  - image: a\n    name: " + "n" * 62 + "\n    for_each: {range: [0, 10]}\n",
            "3: jobs[0].name (with index): '" + "n" * 62 + "-9' is longer than 63 characters",
        ),
        # defaults
        (
            "defaults:\n  image: a\n  name: x\njobs: [{}]\n",
            "3: defaults.name: not allowed in defaults",
        ),
        (
            "defaults:\n  image: a\n  for_each: [1]\njobs: [{}]\n",
            "3: defaults.for_each: not allowed in defaults",
        ),
        (
            "defaults:\n  imag: a\njobs: [{}]\n",
            "2: defaults.imag: unknown key (did you mean 'image'?)",
        ),
        ("defaults: [a]\njobs: [{}]\n", "1: defaults: expected a mapping, got a list"),
    ],
)
def test_errors_point_at_the_line(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(expected), message


def test_an_error_in_a_default_points_at_the_defaults_line(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        defaults:
          image: busybox
          deploy:
            resources:
              limits: {memory: lots}
        jobs:
          - name: a
            deploy:
              resources:
                reservations: {memory: 1g}
        """,
    )
    assert message.startswith("5: defaults.deploy.resources.limits.memory: 'lots' is not a size")


def test_an_error_through_an_alias_points_at_the_anchor(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        x-base: &base
          image: busybox
          timeout: soon
        jobs:
          - <<: *base
            name: a
        """,
    )
    assert message.startswith("3: jobs[0].timeout: 'soon' is not a duration")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: b, image: x}\n  - {name: a, image: x}\n",
            "4: jobs[2].name: duplicate job name 'a' (also at line 2, jobs[0].name)",
        ),
        (
            "jobs:\n  - {name: fan-1, image: x}\n  - {name: fan, image: x, for_each: [a, b]}\n",
            "3: jobs[1].name: duplicate job name 'fan-1' (also at line 2, jobs[0].name)",
        ),
        (
            "jobs: [{name: a, image: x}, {name: a, image: x}]\n",
            "1: jobs[1].name: duplicate job name 'a' (also at line 1, jobs[0].name)",
        ),
    ],
)
def test_duplicate_names_name_both_lines(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobs:\n  - image: a\n   bad: indent\n", "3: YAML syntax error: "),
        ("jobs:\n  - image: [a\n", "3: YAML syntax error: "),
        ("jobs:\n  - image: a\n\timage: b\n", "3: YAML syntax error: "),
        ("jobs:\n  - image: a\n\tname: b\n", "3: YAML syntax error: "),
        ("a: &a [*a]\njobs: [{image: x}]\n", "1: a[0][0]"),
        (
            "jobs: [{image: a}]\n---\njobs: []\n",
            "2: YAML syntax error: a second document (---); a batch file holds one",
        ),
        (
            "jobs:\n  - image: !custom a\n",
            "2: YAML syntax error: could not determine a constructor",
        ),
        (
            "jobs:\n  - image: a\n    image: b\n",
            "3: jobs[0].image: duplicate key (first at line 2)",
        ),
        ("jobs: !!set {a: null}\n", "1: jobs: unsupported YAML tag"),
        ("jobs:\n  - image: a\n    command: \x00\n", "3: YAML syntax error: "),
        (
            "jobs:\n  - <<: 5\n    image: a\n",
            "2: jobs[0]: '<<' needs a mapping or a list of mappings",
        ),
    ],
)
def test_yaml_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_tabs_get_a_hint(tmp_path: Path) -> None:
    assert "YAML indents with spaces, not tabs" in error(tmp_path, "jobs:\n\t- image: a\n")


def test_recursive_aliases_are_refused(tmp_path: Path) -> None:
    assert "(a recursive alias?)" in error(tmp_path, "x-a: &a [*a]\njobs: [{image: x}]\n")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yml: no such batch file"):
        load_batch(tmp_path / "nope.yml")
    with pytest.raises(SpecError, match="cannot read"):
        load_batch(tmp_path)
    (tmp_path / "bin.yml").write_bytes(b"jobs: \xff\n")
    with pytest.raises(SpecError, match=r"bin\.yml: not valid UTF-8"):
        load_batch(tmp_path / "bin.yml")


def test_env_file_errors_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("OK=1\nNOT OK=2\n", encoding="utf-8")
    message = error(tmp_path, "jobs:\n  - image: a\n    env_file: [bad.env]\n")
    bad = tmp_path / "bad.env"
    assert message == f"3: jobs[0].env_file[0]: {bad}:2: variable name 'NOT OK' contains whitespace"


def test_the_batch_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batchfile, "MAX_JOBS", 5)
    assert len(load(tmp_path, "jobs: [{image: a, for_each: {range: [0, 5]}}]")) == 5
    message = error(
        tmp_path,
        "jobs:\n  - {image: a, for_each: [1, 2, 3]}\n  - {image: a, for_each: [1, 2, 3]}\n",
    )
    assert message.startswith("3: jobs[1].for_each: the batch would have more than 5 jobs")


# -- pipelines: needs, inputs, for_each: {output_of} ---------------------------------------------

WORD_COUNT = """\
jobs:
  - name: split
    image: busybox
    volumes: ["/srv/shared:/data"]
    command: ["sh", "-c", "cd /data && split -l 100 book.txt part. && ls part.*"]
  - name: count
    image: busybox
    needs: [split]
    for_each: {output_of: split}
    volumes: ["/srv/shared:/data:ro"]
    command: ["sh", "-c", "wc -w < /data/$COVEY_ITEM"]
  - name: total
    image: busybox
    needs: [count]
    inputs: [count]
    command: ["sh", "-c", "cat /covey/inputs/count/* | awk '{s+=$1} END {print s}'"]
  - name: alert
    image: busybox
    needs: {count: failed}
    command: ["sh", "-c", "echo some parts failed"]
"""


def test_the_word_count_example_is_four_stages(tmp_path: Path) -> None:
    result = pipeline(tmp_path, WORD_COUNT)
    split, count, total, alert = result.stages
    assert [s.name for s in result.stages] == ["split", "count", "total", "alert"]
    assert (split.needs, split.items_from, split.size) == ((), None, 1)
    assert split.specs[0].name == "split"
    assert split.specs[0].mounts == (Mount("bind", "/data", "/srv/shared"),)
    assert count.needs == (Need("split", Condition.SUCCEEDED, inputs=False),)
    assert (count.items_from, count.dynamic, count.size) == ("split", True, None)
    (template,) = count.specs
    assert template.name == "count"
    assert template.command == ("sh", "-c", "wc -w < /data/$COVEY_ITEM")
    assert template.mounts == (Mount("bind", "/data", "/srv/shared", True),)
    assert (template.env, template.index, template.item) == ((), None, None)
    assert total.needs == (Need("count", Condition.SUCCEEDED, inputs=True),)
    assert total.specs[0].env == (("COVEY_INPUTS", INPUTS_DIR),)
    assert total.specs[0].env_dict["COVEY_INPUTS"] == "/covey/inputs"
    assert alert.needs == (Need("count", Condition.FAILED),)
    assert alert.specs[0].env == ()
    assert [s.name for s in result.static_specs()] == ["split", "total", "alert"]
    assert result.has_needs


def test_a_batch_without_needs_is_one_stage_per_entry(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: first, image: a}
          - {image: b}
          - {name: fan, image: a, for_each: [x, y]}
          - {image: c, for_each: [x], needs: [], inputs: []}
          - {image: d, needs: null, inputs: null}
        """,
    )
    assert [s.name for s in result.stages] == ["first", "jobs[1]", "fan", "jobs[3]", "jobs[4]"]
    assert [s.size for s in result.stages] == [1, 1, 2, 1, 1]
    assert [s.name for s in result.stages[2].specs] == ["fan-0", "fan-1"]
    assert [s.name for s in result.stages[3].specs] == [None]
    assert not result.has_needs
    assert all(s.items_from is None for s in result.stages)


def test_needs_as_a_list_and_as_a_mapping(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: a, image: x}
          - {name: b, image: x}
          - {name: listed, image: x, needs: [a, b]}
          - name: mapped
            image: x
            needs:
              a: completed
              b: failed
            inputs: [b]
        """,
    )
    listed, mapped = result.stages[2:]
    assert listed.needs == (Need("a"), Need("b"))
    assert mapped.needs == (Need("a", Condition.COMPLETED), Need("b", Condition.FAILED, True))


@pytest.mark.parametrize("condition", list(Condition))
def test_each_condition(tmp_path: Path, condition: Condition) -> None:
    result = pipeline(
        tmp_path,
        f"""\
        jobs:
          - {{name: a, image: x, for_each: [1, 2]}}
          - {{name: b, image: x, for_each: [3, 4], needs: {{a: {condition.value}}}}}
        """,
    )
    assert result.stages[1].needs == (Need("a", condition),)


def test_a_need_may_name_a_later_entry_and_numbers_are_names(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: report, image: x, needs: [1]}
          - {name: 1, image: x}
        """,
    )
    assert result.stages[0].needs == (Need("1"),)
    assert result.stages[1].name == "1"


def test_inputs_set_covey_inputs_on_every_instance(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: a, image: x}
          - name: b
            image: x
            environment: {MODE: fast}
            needs: [a]
            inputs: [a]
            for_each: [p, q]
        """,
    )
    first, second = result.stages[1].specs
    assert first.env == (
        ("MODE", "fast"),
        ("COVEY_INPUTS", "/covey/inputs"),
        ("COVEY_INDEX", "0"),
        ("COVEY_ITEM", "p"),
    )
    assert (second.name, second.index, second.item) == ("b-1", 1, "q")
    assert second.env_dict["COVEY_INPUTS"] == "/covey/inputs"


def test_a_fan_out_over_output_keeps_its_inputs_in_the_template(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: list, image: x}
          - {name: cfg, image: x}
          - name: each
            image: x
            needs: {list: succeeded, cfg: completed}
            inputs: [cfg]
            for_each:
              output_of: list
        """,
    )
    stage = result.stages[2]
    assert stage.items_from == "list"
    assert stage.specs[0].env == (("COVEY_INPUTS", "/covey/inputs"),)
    assert stage.needs == (Need("list"), Need("cfg", Condition.COMPLETED, True))


def test_each_between_two_fan_outs_over_the_same_source(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: split, image: x}
          - {name: count, image: x, needs: [split], for_each: {output_of: split}}
          - name: check
            image: x
            needs: {split: succeeded, count: each}
            for_each: {output_of: split}
        """,
    )
    assert result.stages[2].needs == (Need("split"), Need("count", Condition.EACH))
    assert result.static_specs() == [JobSpec("x", name="split")]


def test_each_between_stages_of_the_same_size(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: a, image: x, for_each: {range: [0, 3]}}
          - {name: b, image: x, for_each: [p, q, r], needs: {a: each}}
        """,
    )
    assert result.stages[1].needs == (Need("a", Condition.EACH),)


def test_a_fan_out_over_output_counts_nothing_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batchfile, "MAX_JOBS", 3)
    assert len(load(tmp_path, WORD_COUNT)) == 3
    message = error(tmp_path, WORD_COUNT + "  - {name: more, image: x}\n")
    assert message.startswith("21: jobs[4]: the batch would have more than 3 jobs")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # names that are not there, or cannot be
        (
            "jobs:\n  - {name: a, image: x}\n  - name: b\n    image: x\n    needs: [a, c]\n",
            "5: jobs[1].needs[1]: no job named 'c' in this batch",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: b\n    image: x\n    needs:\n"
            "      a: completed\n      zz: failed\n",
            "7: jobs[1].needs.zz: no job named 'zz' in this batch",
        ),
        (
            "jobs:\n  - {image: x}\n  - {name: b, image: x, needs: ['jobs[0]']}\n",
            "3: jobs[1].needs[0]: 'jobs[0]' is not a valid name",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: b, image: x, needs: {-a: failed}}\n",
            "3: jobs[1].needs.-a: '-a' is not a valid name",
        ),
        (
            "jobs:\n  - name: a\n    image: x\n    needs:\n      - a\n",
            "5: jobs[0].needs[0]: a job cannot need itself",
        ),
        (
            "jobs:\n  - {name: a, image: x, needs: [a, b]}\n  - {name: b, image: x}\n",
            "2: jobs[0].needs[0]: a job cannot need itself",
        ),
        (
            "jobs:\n  - {name: a, image: x, needs: [b, b]}\n  - {name: b, image: x}\n",
            "2: jobs[0].needs[1]: 'b' is listed twice (first at line 2)",
        ),
        # cycles, named in full
        (
            "jobs:\n  - name: a\n    image: x\n    needs: [b]\n"
            "  - name: b\n    image: x\n    needs: [a]\n",
            "4: jobs[0].needs[0]: a cycle: a -> b -> a",
        ),
        (
            "jobs:\n  - {name: x, image: x, needs: [a]}\n  - {name: a, image: x, needs: [b]}\n"
            "  - {name: b, image: x, needs: {c: completed}}\n"
            "  - name: c\n    image: x\n    needs:\n      a: failed\n",
            "3: jobs[1].needs[0]: a cycle: a -> b -> c -> a",
        ),
        # each
        (
            "jobs:\n  - {name: a, image: x, for_each: [1, 2, 3]}\n"
            "  - {name: b, image: x, for_each: [1, 2], needs: {a: each}}\n",
            "3: jobs[1].needs.a: 'each' pairs instances one to one, but 'b' has 2 and 'a' has 3",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a}}\n"
            "  - {name: b, image: x, needs: {f: each}}\n",
            "4: jobs[2].needs.f: 'each' pairs instances one to one, and the number of instances"
            " of 'f' is known only at run time",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: c, image: x}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a}}\n"
            "  - {name: g, image: x, needs: {c: succeeded, f: each}, for_each: {output_of: c}}\n",
            "5: jobs[3].needs.f: 'each' pairs instances one to one, and the number of instances"
            " of 'g' is known only at run time",
        ),
        # inputs
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: y, image: x}\n  - {name: z, image: x}\n"
            "  - name: b\n    image: x\n    needs: [a]\n    inputs: [y]\n",
            "8: jobs[3].inputs[0]: 'y' is not in needs (a job reads the output of what it"
            " waits for)",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: b, image: x, inputs: [a]}\n",
            "3: jobs[1].inputs[0]: 'a' is not in needs",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: b, image: x, needs: [a], inputs: [a, a]}\n",
            "3: jobs[1].inputs[1]: 'a' is listed twice (first at line 3)",
        ),
        # for_each: {output_of}
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n"
            "    for_each: {output_of: a}\n",
            "5: jobs[1].for_each.output_of: 'a' must be in needs (as succeeded): its output is"
            " read when it has succeeded",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n    needs: {a: completed}\n"
            "    for_each:\n      output_of: a\n",
            "7: jobs[1].for_each.output_of: 'a' must be in needs (as succeeded)",
        ),
        (
            "jobs:\n  - {name: a, image: x, for_each: [1, 2, 3]}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a}}\n",
            "3: jobs[1].for_each.output_of: 'a' must be one job, not 3 instances",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a}}\n"
            "  - {name: g, image: x, needs: [f], for_each: {output_of: f}}\n",
            "4: jobs[2].for_each.output_of: 'f' must be one job, not a fan-out",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n"
            "    for_each: {output_of: nope}\n",
            "5: jobs[1].for_each.output_of: no job named 'nope' in this batch",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - image: x\n    needs: [a]\n"
            "    for_each: {output_of: a}\n",
            "5: jobs[1].for_each: output_of needs the job to have a name (its jobs are named"
            " NAME-0, NAME-1, ...)",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a, range: [0, 2]}}\n",
            "3: jobs[1].for_each: give exactly one of range, lines or output_of",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n"
            "  - {name: f, image: x, needs: [a], for_each: {output_of: a, rnage: [0, 2]}}\n",
            "3: jobs[1].for_each.rnage: unknown key (did you mean 'range'?)",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: " + "f" * 58 + "\n    image: x\n"
            "    needs: [a]\n    for_each: {output_of: a}\n",
            "3: jobs[1].name (with index): '" + "f" * 58 + "-99999' is longer than 63 characters",
        ),
        # defaults and reserved names
        (
            "defaults:\n  image: a\n  needs: [x]\njobs: [{name: x}]\n",
            "3: defaults.needs: not allowed in defaults",
        ),
        (
            "defaults:\n  image: a\n  inputs: [x]\njobs: [{name: x}]\n",
            "3: defaults.inputs: not allowed in defaults",
        ),
        (
            "defaults:\n  image: a\n  for_each: {output_of: x}\njobs: [{name: x}]\n",
            "3: defaults.for_each: not allowed in defaults",
        ),
        (
            "jobs:\n  - image: a\n    environment:\n      COVEY_INPUTS: /elsewhere\n",
            "4: jobs[0].environment.COVEY_INPUTS: COVEY_INPUTS is set by covey (from inputs)",
        ),
        (
            "jobs:\n  - image: a\n    environment: [COVEY_INDEX=1]\n",
            "3: jobs[0].environment[0]: COVEY_INDEX is set by covey (from for_each)",
        ),
        (
            "jobs:\n  - image: a\n    depends_on: [b]\n",
            "3: jobs[0].depends_on: not supported by covey (use 'needs')",
        ),
        # wrong types
        (
            "jobs:\n  - image: a\n    needs: 5\n",
            "3: jobs[0].needs: expected a list of job names or a mapping of job name to condition,"
            " got a number",
        ),
        (
            "jobs:\n  - image: a\n    needs: b\n",
            "3: jobs[0].needs: expected a list of job names or a mapping of job name to condition,"
            " got a string",
        ),
        ("jobs:\n  - image: a\n    needs: [1]\n", "3: jobs[0].needs[0]: no job named '1'"),
        (
            "jobs:\n  - image: a\n    needs:\n      - [b]\n",
            "4: jobs[0].needs[0]: expected a job name, got a list",
        ),
        (
            "jobs:\n  - image: a\n    needs: [yes]\n",
            "3: jobs[0].needs[0]: expected a job name, got a boolean (quote it)",
        ),
        (
            "jobs:\n  - {name: b, image: a}\n  - image: a\n    needs: {b: maybe}\n",
            "4: jobs[1].needs.b: 'maybe' is not a condition (one of succeeded, completed,"
            " failed, each)",
        ),
        (
            "jobs:\n  - {name: b, image: a}\n  - image: a\n    needs:\n      b:\n",
            "5: jobs[1].needs.b: expected a condition (one of succeeded, completed, failed,"
            " each), got null",
        ),
        (
            "jobs:\n  - {name: b, image: a}\n  - image: a\n    needs: {b: [failed]}\n",
            "4: jobs[1].needs.b: expected a condition (one of succeeded, completed, failed,"
            " each), got a list",
        ),
        (
            "jobs:\n  - {name: b, image: a}\n  - image: a\n    needs: [b]\n    inputs: b\n",
            "5: jobs[1].inputs: expected a list of job names, got a string",
        ),
        (
            "jobs:\n  - {name: b, image: a}\n  - image: a\n    inputs: [{b: 1}]\n",
            "4: jobs[1].inputs[0]: expected a job name, got a mapping",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n    needs: [a]\n"
            "    for_each: {output_of: [a]}\n",
            "6: jobs[1].for_each.output_of: expected a job name, got a list",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n    needs: [a]\n"
            "    for_each: {output_of: null}\n",
            "6: jobs[1].for_each.output_of: expected a job name, got null",
        ),
        (
            "jobs:\n  - {name: a, image: x}\n  - name: f\n    image: x\n    needs: [a]\n"
            "    for_each: {output_of: -a}\n",
            "6: jobs[1].for_each.output_of: '-a' is not a valid name",
        ),
        (
            "jobs:\n  - image: x\n    for_each: true\n",
            "3: jobs[0].for_each: expected a list, {range: [START, END]}, {lines: FILE} or"
            " {output_of: JOB}, got a boolean",
        ),
    ],
)
def test_pipeline_errors_point_at_the_line(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(expected), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "jobs:\n  - {name: a, image: x}\n  - {name: a, image: x, for_each: [1]}\n",
            "3: jobs[1].name: duplicate job name 'a' (also at line 2, jobs[0].name)",
        ),
        (
            "jobs:\n  - {name: a, image: x, for_each: [1, 2]}\n  - {name: a, image: x}\n",
            "3: jobs[1].name: duplicate job name 'a' (also at line 2, jobs[0].name)",
        ),
        (
            "jobs:\n  - {name: s, image: x}\n"
            "  - {name: s, image: x, needs: [s], for_each: {output_of: s}}\n",
            "3: jobs[1].name: duplicate job name 's' (also at line 2, jobs[0].name)",
        ),
        (
            "jobs:\n  - {name: s, image: x}\n  - {name: f-2, image: x}\n"
            "  - {name: f, image: x, needs: [s], for_each: {output_of: s}}\n",
            "4: jobs[2].name: its jobs are named f-0, f-1, ..., but 'f-2' is taken"
            " (at line 3, jobs[1].name)",
        ),
        (
            "jobs:\n  - {name: s, image: x}\n"
            "  - {name: f, image: x, needs: [s], for_each: {output_of: s}}\n"
            "  - {name: g, image: x, for_each: [1]}\n  - {name: f-10, image: x}\n",
            "5: jobs[3].name: duplicate job name 'f-10' (the fan-out at line 3, jobs[1].name,"
            " names its jobs f-0, f-1, ...)",
        ),
    ],
)
def test_stage_names_are_unique(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_names_that_no_fan_out_makes_are_free(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        """\
        jobs:
          - {name: s, image: x}
          - {name: f, image: x, needs: [s], for_each: {output_of: s}}
          - {name: f-01, image: x}
          - {name: f-x, image: x}
          - {name: f-1-a, image: x}
        """,
    )
    assert [s.name for s in result.static_specs()] == ["s", "f-01", "f-x", "f-1-a"]


def test_only_the_first_problem_is_reported(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        jobs:
          - {name: a, image: x, needs: [b]}
          - {name: b, image: x, needs: [a, nope]}
          - {name: c, image: x, needs: [c]}
        """,
    )
    assert message == "3: jobs[1].needs[1]: no job named 'nope' in this batch"


def test_an_error_in_needs_through_an_alias_points_at_the_anchor(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        x-after: &after
          needs:
            first: succeeded
            second: done
        jobs:
          - {name: first, image: x}
          - {name: second, image: x}
          - <<: *after
            image: x
        """,
    )
    assert message.startswith("4: jobs[2].needs.second: 'done' is not a condition")


def test_a_long_chain_of_needs_is_no_recursion_error(tmp_path: Path) -> None:
    entries = [f"  - {{name: j{i}, image: x, needs: [j{i + 1}]}}" for i in range(2999)]
    text = "jobs:\n" + "\n".join(entries) + "\n  - {name: j2999, image: x}\n"
    result = pipeline(tmp_path, text)
    assert len(result.stages) == 3000


def test_registry_auth_and_resolve_image_are_job_keys(tmp_path: Path) -> None:
    text = """
    defaults: {registry_auth: true}
    jobs:
      - {image: reg.example:5000/a:1, command: ["true"]}
      - {image: reg.example:5000/a:1, command: ["true"], resolve_image: false}
    """
    one, two = load(tmp_path, text)
    assert (one.registry_auth, one.resolve_image) == (True, True)
    assert (two.registry_auth, two.resolve_image) == (True, False)


def test_registry_auth_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="registry_auth"):
        load(tmp_path, "jobs:\n  - {image: a, registry_auth: maybe}\n")


def test_priority_is_a_job_key(tmp_path: Path) -> None:
    one, two = load(
        tmp_path, "defaults: {priority: 2}\njobs:\n  - {image: a}\n  - {image: a, priority: -1}\n"
    )
    assert (one.priority, two.priority) == (2, -1)
    with pytest.raises(SpecError, match=r"batch.yml:2: jobs\[0\].priority: .*integer"):
        load(tmp_path, "jobs:\n  - {image: a, priority: high}\n")
