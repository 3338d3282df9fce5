"""covey's benchmark suite: ``python -m bench`` (or ``nox -s bench``).

A fan-out of N one-shot jobs, run side by side on one private engine by several approaches:

- ``covey``       the real API path, :meth:`covey.Client.map`, in a child process of its own
- ``sequential``  the seed approach: create a service, poll its tasks once a second, remove it,
                  one job after another
- ``naive``       every service created at once, each polled separately once a second
- ``ceiling``     a minimal client: every service created at once, one batched task listing
                  (label filter) to wait, removal as soon as a task is complete
- ``replicated-job``  Swarm's native job mode with the same number of completions

Every approach talks to the engine through a counting proxy (:mod:`bench.proxy`), so API
requests per job are counted the same way for all. :mod:`bench.scale` measures covey's own
tracking and store cost for 10,000 and 100,000 jobs against a simulated engine.
:mod:`bench.pipelines` measures pipelines on the same engine: how soon a dependent is
admitted once its need is recorded, and what a reduce over a 1,000-instance map costs beyond
its own run (``python -m bench --only pipelines`` runs just that part).
"""

RESULTS_SCHEMA = 1
