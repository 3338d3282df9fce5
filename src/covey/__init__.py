"""covey: run large numbers of one-shot containers on Docker Swarm and bring every one home.

The async API::

    async with covey.Client() as c:
        result = await c.run(covey.JobSpec(image="busybox", command=("echo", "hi")))
        async for r in c.map(specs):
            ...
"""

from covey.client import Client
from covey.context import Options
from covey.errors import CoveyError, EngineError, SpecError, StoreError
from covey.results import JobResult
from covey.spec import JobSpec, Mount, Resources, RetryPolicy, SecretRef
from covey.states import JobState

__all__ = [
    "Client",
    "CoveyError",
    "EngineError",
    "JobResult",
    "JobSpec",
    "JobState",
    "Mount",
    "Options",
    "Resources",
    "RetryPolicy",
    "SecretRef",
    "SpecError",
    "StoreError",
]
