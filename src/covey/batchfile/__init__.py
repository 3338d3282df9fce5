"""Batch files: many jobs in one YAML file, each entry written like a compose service.

Every entry of ``jobs:`` is one stage of a :class:`~covey.pipeline.Pipeline`: one job, the
instances of a ``for_each``, or a fan-out over another job's output (``for_each: {output_of}``);
``needs`` and ``inputs`` make stages wait for each other and read each other's stdout.

The YAML is read as a node tree rather than plain data so that every value keeps the line it was
written on, through aliases, merge keys (``<<``) and ``defaults:`` merging: a user with a
thousand-line file needs ``FILE:LINE: jobs[2].deploy.resources.reservations.memory: ...``, not
"invalid size". Nothing is interpolated: ``$VAR`` in a command is for the job's shell.

One module per part: :mod:`~covey.batchfile.nodes` (located values and typed access),
:mod:`~covey.batchfile.reader` (YAML to nodes), :mod:`~covey.batchfile.fields` (the fields of
one job), :mod:`~covey.batchfile.expand` (static ``for_each``), :mod:`~covey.batchfile.links`
(``needs``, ``inputs``, ``output_of``), :mod:`~covey.batchfile.loader` (the whole file).
"""

from covey.batchfile.loader import load_batch

__all__ = ["MAX_JOBS", "load_batch"]

# Read as ``batchfile.MAX_JOBS`` at call time by expand and loader, so that this one value (or a
# test's patch of it) holds everywhere.
MAX_JOBS = 100_000
"""More jobs than this in one batch is almost surely a for_each mistake (and a memory hazard)."""
