"""What a task costs: a plain asyncio task (the scheduler's hand-off) against an anyio
task-group task, in instructions counted by valgrind.

The scheduler hands a generation that has to wait off to a plain asyncio task,
kept as it keeps one (in a set, with a done callback, an event set when the set
empties); tasks and samplers are tasks of the run's anyio task group
(``TaskGroup.start_soon``). Each task here awaits ``asyncio.sleep(0)`` once.
Both kinds run at two sizes under ``valgrind --tool=callgrind``, and the
difference per task is printed, so one-off costs (interpreter start, imports)
cancel out. Figures: ``docs/design/scheduler.md``.

Usage: ``python benchmarks/task_cost.py`` (needs ``valgrind``; about a minute).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import anyio

SMALL, LARGE = 1_000, 3_000  # tasks
KINDS = ("plain", "task group")


async def body() -> None:
    await asyncio.sleep(0)


async def plain_tasks(count: int) -> None:
    handed: set[asyncio.Task[None]] = set()
    quiet = asyncio.Event()

    def done(task: asyncio.Task[None]) -> None:
        handed.discard(task)
        if not handed:
            quiet.set()

    create_task = asyncio.get_running_loop().create_task
    for _ in range(count):
        task = create_task(body())
        handed.add(task)
        task.add_done_callback(done)
    await quiet.wait()


async def task_group_tasks(count: int) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(body)


def child(kind: str, count: int) -> None:
    """What runs under valgrind: a warm-up, then ``count`` tasks of ``kind``."""
    tasks = plain_tasks if kind == "plain" else task_group_tasks

    async def main() -> None:
        await tasks(50)
        await tasks(count)

    anyio.run(main)


def instructions(kind: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                kind,
                str(count),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package `valgrind`); nothing measured")
        return
    print("instructions per task (valgrind, difference of 3,000- and 1,000-task runs)")
    per_task: dict[str, float] = {}
    for kind in KINDS:
        with ThreadPoolExecutor(2) as pool:
            small, large = pool.map(instructions, (kind, kind), (SMALL, LARGE))
        per_task[kind] = (large - small) / (LARGE - SMALL)
        print(f"  {kind:<11} {per_task[kind]:>10,.0f}")
    ratio = per_task["task group"] / per_task["plain"]
    print(f"  a task-group task costs {ratio:.1f}x a plain one")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
