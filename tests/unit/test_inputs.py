"""inputs.py without Docker: input paths, covey's limits, and the archive container mode unpacks."""

from __future__ import annotations

import base64
import io
import tarfile

import pytest

from covey.engine import config_record, request_kind
from covey.errors import EngineError
from covey.inputs import (
    DIR_MODE,
    FILE_MODE,
    MAX_CONFIG,
    MAX_FILES,
    MAX_TOTAL,
    InputFile,
    InputsTooLarge,
    check_inputs,
    directories,
    tar_archive,
)


@pytest.mark.parametrize("path", ["count/0", "index.json", "a/b/c", "x.y-z_1/..."])
def test_plain_relative_paths_are_inputs(path: str) -> None:
    f = InputFile(path, b"data")
    assert f.target == f"/covey/inputs/{path}"


@pytest.mark.parametrize(
    "path", ["", "/abs", "a//b", "a/", "../x", "a/../b", "a/..", "./a", "a/./b", "a\0b"]
)
def test_paths_that_leave_or_blur_the_inputs_directory_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="input path"):
        InputFile(path, b"")


def test_data_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        InputFile("a", "text")  # type: ignore[arg-type]


def test_the_limits_are_the_measured_ones() -> None:
    assert MAX_CONFIG == 1_023_999  # swarm: "less than 1024000 bytes"
    assert MAX_TOTAL == 64 * 1024 * 1024
    assert MAX_FILES == 4096


def test_inputs_within_the_limits_pass() -> None:
    files = [InputFile(f"a/{k}", b"x" * MAX_CONFIG) for k in range(64)]
    check_inputs(files)
    check_inputs(files, swarm=False)
    check_inputs([])
    check_inputs([InputFile("empty", b"")])


def test_the_total_is_refused_in_either_mode_with_advice() -> None:
    files = [InputFile(f"a/{k}", b"x" * (1024 * 1024)) for k in range(80)]
    for swarm in (True, False):
        with pytest.raises(InputsTooLarge) as caught:
            check_inputs(files, swarm=swarm)
        message = str(caught.value)
        assert "inputs of 80.0 MiB are more than covey delivers (64 MiB in all" in message
        assert "shared volume" in message
        assert ("1,023,999 bytes per file" in message) is swarm
    assert isinstance(caught.value, EngineError)
    check_inputs([InputFile("a", b"x" * MAX_TOTAL)], swarm=False)
    with pytest.raises(InputsTooLarge):
        check_inputs([InputFile("a", b"x" * (MAX_TOTAL + 1))], swarm=False)


def test_a_file_larger_than_one_config_is_refused_in_swarm_mode_only() -> None:
    files = [InputFile("small", b"x"), InputFile("big/0", b"x" * (MAX_CONFIG + 1))]
    with pytest.raises(InputsTooLarge, match="input /covey/inputs/big/0 of 1,024,000 bytes"):
        check_inputs(files)
    check_inputs(files, swarm=False)


def test_too_many_files_for_swarm() -> None:
    files = [InputFile(f"a/{k}", b"x") for k in range(MAX_FILES + 1)]
    with pytest.raises(InputsTooLarge, match=f"{MAX_FILES + 1} input files"):
        check_inputs(files)
    check_inputs(files, swarm=False)
    check_inputs(files[:MAX_FILES])


def test_two_files_at_one_place_are_a_bug() -> None:
    with pytest.raises(ValueError, match="same path"):
        check_inputs([InputFile("a", b"1"), InputFile("a", b"2")])
    with pytest.raises(ValueError, match="inside input 'a'"):
        check_inputs([InputFile("a", b"1"), InputFile("a/0", b"2")])


def test_directories_parents_first() -> None:
    files = [InputFile("b/c/d", b""), InputFile("a/0", b""), InputFile("top", b"")]
    assert directories(files) == ["a", "b", "b/c"]


def test_the_archive_holds_read_only_files_and_directories_owned_by_root() -> None:
    binary = bytes(range(256)) * 3
    files = [
        InputFile("count/0", b"zero\n"),
        InputFile("count/1", binary),
        InputFile("count/index.json", b"{}"),
        InputFile("deep/er/x", b""),
        InputFile("é/" + "n" * 150, b"long name"),
    ]
    data = tar_archive(files, mtime=1_700_000_000)
    assert tar_archive(files, mtime=1_700_000_000) == data  # the same bytes every time
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:  # uncompressed
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [
            "covey/inputs",
            "covey/inputs/count",
            "covey/inputs/deep",
            "covey/inputs/é",
            "covey/inputs/deep/er",
            "covey/inputs/count/0",
            "covey/inputs/count/1",
            "covey/inputs/count/index.json",
            "covey/inputs/deep/er/x",
            "covey/inputs/é/" + "n" * 150,
        ]
        for m in members:
            assert (m.uid, m.gid, m.mtime) == (0, 0, 1_700_000_000), m.name
            assert m.mode == (DIR_MODE if m.isdir() else FILE_MODE), m.name
            assert m.isdir() or m.isfile(), m.name
        contents = {
            m.name.removeprefix("covey/inputs/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in members
            if m.isfile()
        }
    assert contents == {f.path: f.data for f in files}


def test_an_empty_archive_still_makes_the_directory() -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_archive([])), mode="r:") as tar:
        assert [(m.name, m.isdir()) for m in tar.getmembers()] == [("covey/inputs", True)]


def test_a_config_record_keeps_data_only_when_asked() -> None:
    raw = {
        "ID": "c1",
        "Spec": {
            "Name": "covey-abc-1-in-0",
            "Labels": {"covey.attempt": "abc-1", "covey.store": "s1"},
            "Data": base64.b64encode(b"\x00\xffdata").decode(),
            "Templating": {"Name": "golang"},
        },
    }
    listed = config_record(raw)
    assert (listed.id, listed.name, listed.attempt, listed.data) == (
        "c1",
        "covey-abc-1-in-0",
        "abc-1",
        None,
    )
    assert listed.template
    assert config_record(raw, data=True).data == b"\x00\xffdata"
    assert request_kind("DELETE", "configs/c1") == "DELETE /configs/{id}"
    assert request_kind("POST", "configs/create") == "POST /configs/create"
    assert request_kind("PUT", "containers/x/archive") == "PUT /containers/{id}/archive"
