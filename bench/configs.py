"""How swarm configs behave as job inputs (the figures in README's "How inputs travel").

    eval "$(scripts/engine.sh up --name inp)"
    python -m bench.configs svc 300 1023999     # 300 configs of 1,023,999 bytes in one service
    python -m bench.configs svc 1000 1000 16    # 1,000 small ones, 16 creates at a time
    python -m bench.configs bare 100 100 1      # create and remove only, one at a time
    scripts/engine.sh down --name inp

MODE ``svc``: create N configs of SIZE bytes (CONCURRENCY at a time, default 8), one service
reading all of them, wait for its task, remove the service, then the configs (counting "in
use" refusals); ``bare``: configs only. Set CONSTRAINT (e.g. ``node.role==worker``) to place
the service on a cluster's worker.
"""

import os
import sys
import time

import anyio

from covey.engine import Engine, InUse


async def main(mode, n, size, conc=8):
    async with Engine(os.environ["DOCKER_HOST"]) as e:
        tag = f"m{int(time.time() * 1000) % 10**8}"
        labels = {"covey.store": tag}
        ids = []
        sem = anyio.Semaphore(conc)
        t0 = time.monotonic()

        async def mk(k):
            async with sem:
                data = (b"%08d" % k) * (size // 8) + b"x" * (size % 8)
                ids.append((k, await e.create_config(f"{tag}-in-{k}", data, labels)))

        async with anyio.create_task_group() as tg:
            for k in range(n):
                tg.start_soon(mk, k)
        t_create = time.monotonic() - t0
        print(
            f"create {n} configs of {size} B, {conc} at once: {t_create:.2f}s"
            f" = {1000 * t_create / n:.1f} ms/config",
            flush=True,
        )
        ids.sort()
        if mode == "svc":
            body = {
                "Name": tag,
                "Labels": labels,
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "busybox:latest",
                        "Args": [
                            "sh",
                            "-c",
                            "ls /covey/inputs | wc -l; cat /covey/inputs/* | wc -c",
                        ],
                        "Configs": [
                            {
                                "ConfigName": f"{tag}-in-{k}",
                                "ConfigID": i,
                                "File": {
                                    "Name": f"/covey/inputs/{k}",
                                    "UID": "0",
                                    "GID": "0",
                                    "Mode": 0o444,
                                },
                            }
                            for k, i in ids
                        ],
                    },
                    "RestartPolicy": {"Condition": "none"},
                    **(
                        {"Placement": {"Constraints": [os.environ["CONSTRAINT"]]}}
                        if os.environ.get("CONSTRAINT")
                        else {}
                    ),
                },
                "Mode": {"Replicated": {"Replicas": 1}},
            }
            t1 = time.monotonic()
            try:
                sid = await e.create_service(body)
            except Exception as exc:
                print("service create failed:", type(exc).__name__, str(exc)[:300])
                sid = None
            print(f"service create: {time.monotonic() - t1:.2f}s", flush=True)
            if sid:
                deadline = time.monotonic() + float(os.environ.get("WAIT", "60"))
                while time.monotonic() < deadline:
                    tasks = await e.tasks({"service": [sid]})
                    if tasks and tasks[0].state in ("complete", "failed", "rejected", "shutdown"):
                        break
                    await anyio.sleep(0.1)
                t = tasks[0] if tasks else None
                print(
                    f"task: {t and t.state} err={t and t.err} after {time.monotonic() - t1:.2f}s",
                    flush=True,
                )
                if t and t.state == "complete":
                    logs = await e.service_logs(sid, timeout=10)
                    print("logs:", logs.stdout.data.decode().split())
                t2 = time.monotonic()
                await e.remove_service(sid)
                print(f"service remove: {time.monotonic() - t2:.3f}s")
        t3 = time.monotonic()
        retries = 0
        found = await e.configs({"label": [f"covey.store={tag}"]})

        async def rm(c):
            nonlocal retries
            async with sem:
                while True:
                    try:
                        await e.remove_config(c.id)
                        return
                    except InUse:
                        retries += 1
                        await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for c in found:
                tg.start_soon(rm, c)
        t_rm = time.monotonic() - t3
        print(
            f"remove {len(found)} configs: {t_rm:.2f}s"
            f" = {1000 * t_rm / max(1, len(found)):.1f} ms/config, in-use retries {retries}"
        )
        print(dict(e.requests))


a = sys.argv[1:]
anyio.run(main, a[0], int(a[1]), int(a[2]), *(int(x) for x in a[3:]))
