"""The docker/compose spellings covey accepts, and the errors for the ones it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from covey import flags
from covey.errors import CoveyError, SpecError
from covey.spec import Mount, SecretRef

KI, MI, GI, TI = 1024, 1024**2, 1024**3, 1024**4


def test_spec_error_is_a_covey_error_with_exit_code_125() -> None:
    err = SpecError("--x: bad")
    assert isinstance(err, CoveyError)
    assert err.exit_code == 125
    assert str(err) == "--x: bad"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", MI),
        (4096, 4096),
        ("512b", 512),
        ("512B", 512),
        ("1k", KI),
        ("1kb", KI),
        ("1KiB", KI),
        ("1ki", KI),
        ("512M", 512 * MI),
        ("512m", 512 * MI),
        ("64mb", 64 * MI),
        ("64MB", 64 * MI),
        ("2g", 2 * GI),
        ("2G", 2 * GI),
        ("1.5GiB", 3 * GI // 2),
        ("1.5g", 3 * GI // 2),
        ("1t", TI),
        ("1 GB", GI),
        (" 2g ", 2 * GI),
        (".5k", 512),
        ("1.5", 1),  # docker truncates fractional bytes
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert flags.parse_size(text, what="--reserve-memory") == expected


@pytest.mark.parametrize(
    "text", ["", "12Q", "abc", "1.2.3g", "g", "1gg", "1 g b", "1e3", "0x10", True, None, [1]]
)
def test_parse_size_rejects_junk(text: object) -> None:
    with pytest.raises(SpecError) as info:
        flags.parse_size(text, what="--reserve-memory")  # type: ignore[arg-type]
    assert str(info.value).startswith("--reserve-memory: ")
    assert "is not a size (examples: 512M, 2g, 1.5GiB, 1048576)" in str(info.value)


def test_parse_size_message_exactly() -> None:
    with pytest.raises(SpecError, match=r"^--reserve-memory: '12Q' is not a size"):
        flags.parse_size("12Q", what="--reserve-memory")


@pytest.mark.parametrize("text", ["-1", "-5m", -3])
def test_parse_size_rejects_negative(text: str | int) -> None:
    with pytest.raises(SpecError, match=r"^--memory: .* is negative"):
        flags.parse_size(text, what="--memory")


def test_parse_size_rejects_huge() -> None:
    with pytest.raises(SpecError, match="too large"):
        flags.parse_size("99999999999p")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        ("1.25", 1_250_000_000),
        (0.5, 500_000_000),
        (2, 2_000_000_000),
        ("0.000000001", 1),
        (".5", 500_000_000),
        ("1.", 1_000_000_000),
        (" 3 ", 3_000_000_000),
    ],
)
def test_parse_cpus(text: str | float, expected: int) -> None:
    assert flags.parse_cpus(text, what="--cpus") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "must be more than 0"),
        (0, "must be more than 0"),
        ("0.0", "must be more than 0"),
        ("-1", "negative"),
        ("abc", "is not a number of CPUs"),
        ("", "is not a number of CPUs"),
        ("1/2", "is not a number of CPUs"),
        ("1e3", "is not a number of CPUs"),
        ("0.0000000001", "too precise"),
        (True, "expected a number of CPUs"),
    ],
)
def test_parse_cpus_rejects(text: object, problem: str) -> None:
    with pytest.raises(SpecError, match=f"^--cpus: .*{problem}"):
        flags.parse_cpus(text, what="--cpus")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", 90.0),
        (90, 90.0),
        (1.5, 1.5),
        ("0", 0.0),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("1000000ns", 0.001),
        ("2h45m30s500ms", 9930.5),
        ("0.5h", 1800.0),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert flags.parse_duration(text, what="--timeout") == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "abc", "5x", "m", "1h30", "5 m", "1d", "5M", "1e3s", "1.2.3s", True, None]
)
def test_parse_duration_rejects_junk(text: object) -> None:
    with pytest.raises(SpecError, match=r"^--timeout: .*is not a duration \(examples"):
        flags.parse_duration(text, what="--timeout")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["-5s", "-1", -2])
def test_parse_duration_rejects_negative(text: str | int) -> None:
    with pytest.raises(SpecError, match=r"^--timeout: .* is negative"):
        flags.parse_duration(text, what="--timeout")


def test_parse_duration_zero_can_be_refused() -> None:
    assert flags.parse_duration("0s", what="--backoff") == 0.0
    with pytest.raises(SpecError, match=r"^--timeout: must be more than 0"):
        flags.parse_duration("0s", what="--timeout", allow_zero=False)


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("3", {}, 3),
        (3, {"minimum": 1}, 3),
        (" 0 ", {"minimum": 0}, 0),
        ("255", {"maximum": 255}, 255),
    ],
)
def test_parse_int(text: str | int, kwargs: dict[str, int], expected: int) -> None:
    assert flags.parse_int(text, what="--retries", **kwargs) == expected


@pytest.mark.parametrize(
    ("text", "kwargs", "problem"),
    [
        ("x", {}, "is not an integer"),
        ("1.5", {}, "is not an integer"),
        (True, {}, "expected an integer"),
        ("0", {"minimum": 1}, "0 is less than 1"),
        ("256", {"maximum": 255}, "256 is more than 255"),
    ],
)
def test_parse_int_rejects(text: object, kwargs: dict[str, int], problem: str) -> None:
    with pytest.raises(SpecError, match=f"^--retries: .*{problem}"):
        flags.parse_int(text, what="--retries", **kwargs)  # type: ignore[arg-type]


def test_parse_float() -> None:
    assert flags.parse_float("1.5", what="--factor", minimum=1.0) == 1.5
    assert flags.parse_float(2, what="--factor") == 2.0
    for bad, problem in (("x", "not a number"), ("nan", "not a finite"), ("0.5", "less than 1")):
        with pytest.raises(SpecError, match=f"^--factor: .*{problem}"):
            flags.parse_float(bad, what="--factor", minimum=1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("yes", True), ("False", False), ("0", False), (False, False)],
)
def test_parse_bool(text: str | bool, expected: bool) -> None:
    assert flags.parse_bool(text, what="readonly") is expected


def test_parse_bool_rejects() -> None:
    with pytest.raises(SpecError, match=r"^readonly: 'maybe' is not true or false"):
        flags.parse_bool("maybe", what="readonly")


def test_parse_exit_codes() -> None:
    assert flags.parse_exit_codes("75", what="--retry-on-exit") == (75,)
    assert flags.parse_exit_codes("75, 76,75", what="--retry-on-exit") == (75, 76)
    assert flags.parse_exit_code(1) == 1


@pytest.mark.parametrize("text", ["", "75,", ",", "0", "256", "x", "-1"])
def test_parse_exit_codes_rejects(text: str) -> None:
    with pytest.raises(SpecError, match=r"^--retry-on-exit: "):
        flags.parse_exit_codes(text, what="--retry-on-exit")


# -- environment and labels ----------------------------------------------------------------------

ENVIRON = {"HOME": "/home/me", "EMPTY": ""}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("KEY=VALUE", ("KEY", "VALUE")),
        ("KEY=", ("KEY", "")),
        ("KEY=a=b", ("KEY", "a=b")),
        ("KEY= spaced value ", ("KEY", " spaced value ")),
        ("HOME", ("HOME", "/home/me")),
        ("EMPTY", ("EMPTY", "")),
        ("MISSING", None),
    ],
)
def test_parse_env(item: str, expected: tuple[str, str] | None) -> None:
    assert flags.parse_env(item, ENVIRON, what="--env") == expected


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("=value", "variable name must not be empty"),
        ("", "variable name must not be empty"),
        ("MY KEY=1", "contains whitespace"),
        ("KEY\t", "contains whitespace"),
    ],
)
def test_parse_env_rejects(item: str, problem: str) -> None:
    with pytest.raises(SpecError, match=f"^--env: .*{problem}"):
        flags.parse_env(item, ENVIRON, what="--env")


def test_parse_env_file(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text(
        "\ufeff# a comment\n"
        "\n"
        "A=1\n"
        "  B=two words\n"
        'QUOTED="kept as is"\n'
        "EMPTY_VALUE=\n"
        "HOME\n"
        "  MISSING  \n"
        "   # indented comment\n"
        "WIN=crlf\r\n"
        "URL=http://x/?a=b\n",
        encoding="utf-8",
    )
    assert flags.parse_env_file(path, ENVIRON) == [
        ("A", "1"),
        ("B", "two words"),
        ("QUOTED", '"kept as is"'),
        ("EMPTY_VALUE", ""),
        ("HOME", "/home/me"),
        ("WIN", "crlf"),
        ("URL", "http://x/?a=b"),
    ]


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("A=1\n=oops\n", 2, "variable name must not be empty"),
        ("A=1\n\n# c\nMY VAR=1\n", 4, "variable name 'MY VAR' contains whitespace"),
        ("A B\n", 1, "variable name 'A B' contains whitespace"),
    ],
)
def test_parse_env_file_errors_name_the_line(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    path = tmp_path / "bad.env"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        flags.parse_env_file(path, ENVIRON)
    assert str(info.value) == f"{path}:{line}: {problem}"


def test_parse_env_file_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.env: cannot read env file"):
        flags.parse_env_file(tmp_path / "nope.env", ENVIRON)
    path = tmp_path / "bin.env"
    path.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(SpecError, match=r"bin.env:2: not valid UTF-8"):
        flags.parse_env_file(path, ENVIRON)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("team=data", ("team", "data")),
        ("flag", ("flag", "")),
        ("k=", ("k", "")),
        ("a.b=c=d", ("a.b", "c=d")),
        ("coveyish=1", ("coveyish", "1")),
    ],
)
def test_parse_label(item: str, expected: tuple[str, str]) -> None:
    assert flags.parse_label(item, what="--label") == expected


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("covey.job=x", "reserved"),
        ("COVEY.job", "reserved"),
        ("=x", "must not be empty"),
        ("a b=c", "whitespace"),
    ],
)
def test_parse_label_rejects(item: str, problem: str) -> None:
    with pytest.raises(SpecError, match=f"^--label: .*{problem}"):
        flags.parse_label(item, what="--label")


# -- mounts, volumes, secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=bind,source=/a,target=/b", Mount("bind", "/b", "/a")),
        ("type=bind,src=/a,dst=/b,readonly", Mount("bind", "/b", "/a", True)),
        ("type=bind,source=/a,destination=/b,ro", Mount("bind", "/b", "/a", True)),
        ("type=bind,source=/a,target=/b,readonly=true", Mount("bind", "/b", "/a", True)),
        ("type=bind,source=/a,target=/b,readonly=0", Mount("bind", "/b", "/a", False)),
        ("type=bind,source=/a,target=/b,ro=false", Mount("bind", "/b", "/a", False)),
        ("source=data,target=/data", Mount("volume", "/data", "data")),
        ("target=/scratch", Mount("volume", "/scratch")),
        ("type=volume,src=my-vol.1,dst=/v", Mount("volume", "/v", "my-vol.1")),
        ("type=tmpfs,target=/tmp", Mount("tmpfs", "/tmp")),
        ("TYPE=Bind,Source=/a,Target=/b", Mount("bind", "/b", "/a")),
        ('type=bind,"source=/a,b",target=/c', Mount("bind", "/c", "/a,b")),
    ],
)
def test_parse_mount(text: str, expected: Mount) -> None:
    assert flags.parse_mount(text, what="--mount") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("type=bind,source=/a", "target is required"),
        ("type=bind,target=/b", "a bind mount needs a source"),
        ("type=bind,source=rel,target=/b", "bind source 'rel' is not an absolute path"),
        ("type=bind,source=/a,target=rel", "target 'rel' is not an absolute path"),
        ("type=tmpfs,source=/a,target=/b", "a tmpfs mount has no source"),
        ("type=npipe,target=/b", "mount type 'npipe' is not supported"),
        ("type=volume,source=/abs,target=/b", "volume name"),
        ("type=bind,source=/a,target=/b,colour=red", "unknown key 'colour'"),
        ("type=bind,source=/a,targt=/b", "unknown key 'targt' (did you mean 'target'?)"),
        ("type=volume,target=/b,volume-driver=local", "'volume-driver' is not supported"),
        ("type=tmpfs,target=/b,tmpfs-size=1m", "'tmpfs-size' is not supported"),
        ("type=bind,source=/a,target=/b,readonly=maybe", "readonly: 'maybe' is not true or false"),
        ("type=bind,source=/a,target", "'target' must be a key=value pair"),
        ("type=bind,,target=/b", "empty field"),
        ("", "empty field"),
    ],
)
def test_parse_mount_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        flags.parse_mount(text, what="--mount")
    assert str(info.value).startswith("--mount: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/data", Mount("volume", "/data")),
        ("/host:/ctr", Mount("bind", "/ctr", "/host")),
        ("/host:/ctr:ro", Mount("bind", "/ctr", "/host", True)),
        ("/host:/ctr:rw", Mount("bind", "/ctr", "/host", False)),
        ("cache:/cache", Mount("volume", "/cache", "cache")),
        ("cache:/cache:ro", Mount("volume", "/cache", "cache", True)),
        ("./in:/in", Mount("bind", "/in", "/batch/in")),
        ("../shared/x:/x:ro", Mount("bind", "/x", "/shared/x", True)),
        (".:/work", Mount("bind", "/work", "/batch")),
    ],
)
def test_parse_volume(text: str, expected: Mount) -> None:
    assert flags.parse_volume(text, what="volumes[0]", base_dir="/batch") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is not SRC:DST"),
        ("a:b:c:d", "is not SRC:DST"),
        ("/a::ro", "is not SRC:DST"),
        ("relative", "target 'relative' is not an absolute path"),
        ("/a:rel", "target 'rel' is not an absolute path"),
        ("/a:/b:z", "volume option 'z' is not supported"),
        ("/a:/b:ro,cached", "volume option 'cached' is not supported"),
        ("/a:/b:rx", "unknown volume option 'rx'"),
        ("~/data:/data", "'~' is not expanded"),
        ("bad/name:/x", "is not a valid name"),
    ],
)
def test_parse_volume_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        flags.parse_volume(text, what="volumes[0]", base_dir="/batch")
    assert str(info.value).startswith("volumes[0]: ")
    assert problem in str(info.value)


def test_parse_volume_relative_needs_a_base_dir() -> None:
    with pytest.raises(SpecError, match=r"^--volume: relative path './x': use an absolute path"):
        flags.parse_volume("./x:/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db-password", SecretRef("db-password")),
        ("source=db,target=/etc/db.pw", SecretRef("db", "/etc/db.pw")),
        ("src=db,target=pw", SecretRef("db", "pw")),
        ("source=db", SecretRef("db")),
    ],
)
def test_parse_secret(text: str, expected: SecretRef) -> None:
    assert flags.parse_secret(text, what="--secret") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must not be empty"),
        ("bad name", "is not a valid name"),
        ("target=/x", "source is required"),
        ("source=db,uid=0", "'uid' is not supported"),
        ("source=db,tagret=/x", "unknown key 'tagret' (did you mean 'target'?)"),
        ("source=db,target=", "must be a key=value pair"),
        ("source=-db", "is not a valid name"),
    ],
)
def test_parse_secret_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        flags.parse_secret(text, what="--secret")
    assert str(info.value).startswith("--secret: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node.role==manager", "node.role==manager"),
        ("node.role == Worker", "node.role==worker"),
        ("node.hostname!=node-1", "node.hostname!=node-1"),
        ("node.id==2ivku8v2gvtg4", "node.id==2ivku8v2gvtg4"),
        ("node.platform.os==linux", "node.platform.os==linux"),
        ("node.platform.arch==x86_64", "node.platform.arch==x86_64"),
        ("node.labels.zone==eu-west-1a", "node.labels.zone==eu-west-1a"),
        ("Node.Labels.GPU==true", "node.labels.GPU==true"),
        ("engine.labels.storage==ssd", "engine.labels.storage==ssd"),
        ("  node.labels.rack != r12  ", "node.labels.rack!=r12"),
    ],
)
def test_parse_constraint(text: str, expected: str) -> None:
    assert flags.parse_constraint(text, what="--constraint") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("node.role=manager", "is not KEY==VALUE or KEY!=VALUE"),
        ("node.role", "is not KEY==VALUE or KEY!=VALUE"),
        ("==x", "is not KEY==VALUE or KEY!=VALUE"),
        ("node.role==", "invalid value"),
        ("node.role==boss", "node.role is manager or worker"),
        (
            "node.hostnam==a",
            "unknown constraint key 'node.hostnam' (did you mean 'node.hostname'?)",
        ),
        ("node.labels.==x", "needs a label name"),
        ("zone==a", "unknown constraint key 'zone'"),
        ("node.id==a==b", "invalid value"),
        ("node.labels.a==b;c", "invalid value"),
    ],
)
def test_parse_constraint_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        flags.parse_constraint(text, what="--constraint")
    assert str(info.value).startswith("--constraint: ")
    assert problem in str(info.value)


def test_did_you_mean() -> None:
    assert flags.did_you_mean("imgae", ["image", "command"]) == " (did you mean 'image'?)"
    assert flags.did_you_mean("zzz", ["image", "command"]) == ""


# -- image references (distribution/reference's grammar) -----------------------------------------

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:latest",
        "busybox:1.36.1-musl",
        "library/busybox",
        "myorg/team/app:2",
        "my-org/my_app__x.y:V1_beta",
        "a--b/c",
        "localhost/app",
        "localhost:5000/app:1",
        "registry.example.com/org/app",
        "registry.example.com:443/org/app:1.0",
        "Registry.Example.com/app",  # a capital first part is a host, as docker decides
        "127.0.0.1:5000/app",
        "[::1]:5000/app",
        f"busybox@{DIGEST}",
        f"busybox:latest@{DIGEST}",
        f"reg:5000/app@sha512:{'0' * 128}",
        "8f0763351b3f",  # a short image id is a valid name
        "jobs.yaml",  # valid for the grammar; `covey submit` says more (below)
    ],
)
def test_image_references_docker_accepts(ref: str) -> None:
    assert flags.image_problem(ref) is None
    assert flags.parse_image(ref) == ref


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("", "must not be empty"),
        ("busy box", "contains whitespace"),
        ("Busybox", "repository name 'Busybox' must be lower-case"),
        ("myorg/App", "repository name 'myorg/App' must be lower-case"),
        ("busybox:", "'' is not a tag"),
        ("busybox:.x", "'.x' is not a tag"),
        ("busybox:" + "t" * 129, "is not a tag"),
        ("busybox:a:b", "'busybox:a' is not a repository name"),  # one tag only
        ("busybox@sha256:abc", "is not a digest"),
        (f"busybox@md5:{'a' * 64}", "is not a digest"),
        (f"busybox@sha256:{'A' * 64}", "is not a digest"),
        ("-busybox", "'-busybox' is not a repository name"),
        ("busybox-", "is not a repository name"),
        ("a..b", "is not a repository name"),
        ("a___b", "is not a repository name"),
        ("org//app", "is not a repository name"),
        ("/app", "is not a repository name"),
        ("app/", "is not a repository name"),
        ("./jobs.yaml", "'.' is not a registry host[:port]"),
        ("-h.x:5000/app", "'-h.x:5000' is not a registry host[:port]"),
        ("reg:port/app", "'reg:port' is not a registry host[:port]"),
        ("a" * 64, "is an image id, not a name"),
        ("a/" + "b" * 260, "longer than 255 characters"),
    ],
)
def test_image_references_docker_refuses(ref: str, problem: str) -> None:
    found = flags.image_problem(ref)
    assert found is not None and problem in found, found
    with pytest.raises(SpecError) as info:
        flags.parse_image(ref, what="IMAGE")
    assert str(info.value).startswith(f"IMAGE: '{ref}' is not a valid image reference: ")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("name", ["jobs.yaml", "nightly.YML", "./jobs.txt", "jobs"])
def test_a_batch_file_in_the_images_place_points_to_f(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if not name.endswith((".yaml", ".YML")):
        (tmp_path / name.removeprefix("./")).write_text("jobs: []\n")
    with pytest.raises(SpecError) as info:
        flags.parse_image(name, what="IMAGE", file_hint="covey submit -f {}")
    message = str(info.value)
    assert message.startswith(f"IMAGE: '{name}' ")
    assert message.endswith(f"did you mean `covey submit -f {name}`?")


def test_without_a_file_hint_a_yaml_name_is_just_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert flags.parse_image("jobs.yaml") == "jobs.yaml"  # batch files: only the grammar
    monkeypatch.chdir(tmp_path)
    (tmp_path / "busybox").mkdir()  # a directory named like the image is no batch file
    assert flags.parse_image("busybox", file_hint="covey submit -f {}") == "busybox"


def test_a_covey_error_inside_task_groups_is_found() -> None:
    """cli.execute prints one line for an error raised inside (nested) task groups."""
    from covey.cli import covey_error
    from covey.errors import CoveyError

    inner = CoveyError("another covey supervise is running")
    group = BaseExceptionGroup("outer", [ExceptionGroup("inner", [ValueError(), inner])])
    assert covey_error(group) is inner
    assert covey_error(BaseExceptionGroup("x", [ValueError()])) is None
