"""covey: run large numbers of one-shot containers on Docker Swarm and bring every one home.

The async API::

    async with covey.Client() as c:
        result = await c.run(covey.JobSpec(image="busybox", command=("echo", "hi")))
        async for r in c.map(specs):
            ...

Pipelines (stages that wait for each other, fan-outs over a job's output, inputs)::

    p = covey.Pipeline()
    p.add("split", split_spec)
    p.add("count", count_spec, needs=["split"], for_each="split")
    p.add("total", total_spec, needs=["count"], inputs=["count"])
    async for r in c.run_batch(p):   # or: await c.submit(p) for `covey supervise`
        ...
"""

from covey.client import Client
from covey.context import Options
from covey.errors import CoveyError, EngineError, SpecError, StoreError
from covey.pipeline import Condition, Pipeline
from covey.results import JobResult
from covey.spec import JobSpec, Mount, Resources, RetryPolicy, SecretRef
from covey.states import JobState

__all__ = [
    "Client",
    "Condition",
    "CoveyError",
    "EngineError",
    "JobResult",
    "JobSpec",
    "JobState",
    "Mount",
    "Options",
    "Pipeline",
    "Resources",
    "RetryPolicy",
    "SecretRef",
    "SpecError",
    "StoreError",
]
