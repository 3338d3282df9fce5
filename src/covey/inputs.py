"""A pipeline job's inputs: files it finds read-only under ``/covey/inputs``.

The store computes them (the captured output of the jobs a job depends on, and an index);
the backends carry them to the container. In swarm mode each file travels as one swarm
config, mounted at ``/covey/inputs/<path>`` (a read-only mount: not even root can change
it); in container mode all of them travel as one tar archive unpacked into the created
container before it starts (files 0444 and directories 0555, owned by root: root can still
write them, any other user cannot).

The limits below are covey's, chosen from measurements on Engine 20.10.24 (2 CPUs): what the
engine refuses, and what it costs.

- Swarm refuses a config of 1000 KiB or more ("config data must be larger than 0 and less
  than 1024000 bytes"), so a file of 1,023,999 bytes is the largest that can travel as one
  config; a file must arrive whole, so a larger one is refused in swarm mode. An empty
  config is refused too: an empty file travels as a config whose data is a Go template
  rendering to nothing.
- Nothing broke with many or large configs: one service with 300 configs of 1,023,999 bytes
  (293 MiB, on a single-node swarm), 140 of them (137 MiB) on a worker node, or 5,000 small
  configs (on a worker) ran and read them all: in 20.10's swarmkit an agent accepts
  assignment messages of up to 2 GiB, and each config is one raft entry, under the 1.5 MiB
  cap on one raft transaction. What grows is the cost: about 2 ms
  per small config and 30-80 ms per MiB to create (8 at a time), and every byte goes through
  the raft log, on disk and in memory on every manager (the WAL grew by more than the data:
  738 MB after 480 MB of configs). A 64 MiB attempt: 2.1-2.4 s to create its 65 configs,
  0.5 s to remove them by name (listing them costs 1.4-1.8 s more: the engine lists configs
  with their data).
- So covey delivers at most :data:`MAX_TOTAL` bytes per attempt in either mode and at most
  :data:`MAX_FILES` files in swarm mode; anything bigger belongs on a shared volume.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from covey.errors import EngineError

INPUTS_DIR = "/covey/inputs"
"""Where a job finds its inputs."""

KiB = 1024
MiB = 1024 * KiB

MAX_CONFIG = 1000 * KiB - 1
"""The largest swarm config Engine 20.10 accepts: 1,023,999 bytes (measured; swarmkit's
``MaxConfigSize`` is 1000 KiB, exclusive). In swarm mode, the largest input file."""

MAX_TOTAL = 64 * MiB
"""The most covey delivers to one attempt, all files together, in either mode."""

MAX_FILES = 4096
"""The most files covey delivers to one attempt in swarm mode (one config each: measured
5,000 in one service working, at about 2 ms each to create and as much to remove)."""


def output_config(attempt_id: str) -> str:
    """The name of the swarm config holding an attempt's stdout, shared with the jobs that
    read it as an input (covey.sharer)."""
    return f"covey-{attempt_id}-out"


FILE_MODE = 0o444
DIR_MODE = 0o555


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file: ``path`` relative to :data:`INPUTS_DIR` (``"count/0"``), its bytes."""

    path: str
    data: bytes
    # ``(id, name)`` of a swarm config that already holds ``data`` (a pipeline job's output,
    # shared ahead of the jobs that read it: see covey.sharer): named, not created again
    shared: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        if not isinstance(self.data, bytes):
            raise TypeError(f"input {self.path!r}: data must be bytes")

    @property
    def target(self) -> str:
        """Where the job finds it: ``/covey/inputs/count/0``."""
        return f"{INPUTS_DIR}/{self.path}"


def check_path(path: str) -> None:
    """A relative path of plain parts: no leading ``/``, no ``.``/``..``, no empty part.
    Covey computes these paths; a bad one is a bug, hence :class:`ValueError`."""
    if not path or path.startswith("/"):
        raise ValueError(f"input path {path!r}: must be relative to {INPUTS_DIR}")
    if "\0" in path:
        raise ValueError(f"input path {path!r}: contains a NUL byte")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"input path {path!r}: empty, '.' and '..' parts are not allowed")


class InputsTooLarge(EngineError):
    """Inputs over covey's limits; nothing was created on the engine."""


def _size(n: float) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


_ADVICE = "write them to a shared volume (volumes:) and pass paths instead"


def check_inputs(files: Sequence[InputFile], *, swarm: bool = True) -> None:
    """Raise :class:`InputsTooLarge` unless covey can deliver these files (``swarm``: as
    swarm configs, else as an archive); :class:`ValueError` for two files at one path or a
    file where another one's directory must be."""
    paths = {f.path for f in files}
    if len(paths) != len(files):
        raise ValueError("two input files have the same path")
    for path in paths:
        parts = path.split("/")
        for k in range(1, len(parts)):
            if "/".join(parts[:k]) in paths:
                raise ValueError(f"input {path!r} is inside input {'/'.join(parts[:k])!r}")
    total = sum(len(f.data) for f in files)
    limits = f"{MAX_TOTAL // MiB} MiB in all" + (
        f"; in swarm mode {MAX_CONFIG:,} bytes per file and {MAX_FILES} files" if swarm else ""
    )
    if total > MAX_TOTAL:
        raise InputsTooLarge(
            f"inputs of {_size(total)} are more than covey delivers ({limits}): {_ADVICE}"
        )
    if not swarm:
        return
    if len(files) > MAX_FILES:
        raise InputsTooLarge(
            f"{len(files)} input files are more than covey delivers ({limits}): {_ADVICE}"
        )
    for f in files:
        if len(f.data) > MAX_CONFIG:
            raise InputsTooLarge(
                f"input {f.target} of {len(f.data):,} bytes is larger than one swarm config"
                f" can carry ({limits}): {_ADVICE}"
            )


def directories(files: Iterable[InputFile]) -> list[str]:
    """Every directory the files need below :data:`INPUTS_DIR`, parents first."""
    dirs: set[str] = set()
    for f in files:
        parts = f.path.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:k]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def tar_archive(files: Sequence[InputFile], *, mtime: float | None = None) -> bytes:
    """An uncompressed tar of the files, to unpack at ``/``: ``covey/inputs/`` and every
    directory below it (0555), then the files (0444), all owned by root (uid and gid 0).
    ``/covey`` itself is not in it: the engine creates it (0755) when the image has none."""
    when = int(time.time() if mtime is None else mtime)
    base = INPUTS_DIR.lstrip("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (base, *(f"{base}/{d}" for d in directories(files))):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, DIR_MODE, when
            tar.addfile(info)
        for f in files:
            info = tarfile.TarInfo(f"{base}/{f.path}")
            info.size, info.mode, info.mtime = len(f.data), FILE_MODE, when
            tar.addfile(info, io.BytesIO(f.data))
    return buffer.getvalue()
