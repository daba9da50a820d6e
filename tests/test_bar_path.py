"""One bar through the running daemon passes every module the diagram names, and never
calls back into a module already on its path.

docs/architecture.md draws the bar path as modules in order, top to bottom. Every call
one bar makes from a module of that path into a module drawn above it is recorded
(Python's profiler, on the event loop's thread, for the one bar only). A module may
call one above it that it depends on (imports, directly or through the modules it
imports: a helper shared by two steps, such as the mirror the plan and the commit
both move); a call into a module above that it does not depend on is a callback (an
injected callable or a hook patched on), the bounce back the diagram must not have.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
import redis.asyncio as aioredis

from testkit.daemon import (
    bar_settled,
    close_bars,
    simulated_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.polling import wait_until
from tests.test_architecture import MODULE, ROOT, diagram

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

Edge = tuple[str, str, str]  # caller module, callee module, callee function
#: Modules on the path only the forward passes' worker thread enters (not profiled).
IN_THE_WORKER_THREAD = {"inference/incremental.py", "inference/runtime.py"}


def path_modules() -> list[str]:
    """The Python modules the diagram names, in the order they first appear."""
    return list(dict.fromkeys(m for m in MODULE.findall(diagram()) if m.endswith(".py")))


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def imports(path: str) -> set[str]:
    """The modules of ours a module imports at run time (not under ``TYPE_CHECKING``)."""
    tree = ast.parse((ROOT / path).read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if (ROOT / (m.replace(".", "/") + ".py")).is_file()}


def depends_on(path: str) -> set[str]:
    """Every module ``path`` reaches through its imports (itself included)."""
    seen, todo = {module_name(path)}, [module_name(path)]
    while todo:
        for found in imports(todo.pop().replace(".", "/") + ".py"):
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


def callbacks(edges: set[Edge], order: list[str]) -> list[Edge]:
    """The edges into a module above the caller that the caller does not depend on."""
    rank = {m: i for i, m in enumerate(order)}
    return sorted((a, b, f) for a, b, f in edges
                  if rank[b] < rank[a] and module_name(b) not in depends_on(a))  # fmt: skip


@contextmanager
def calls_between(modules: list[str]) -> Iterator[set[Edge]]:
    """The (caller, callee, function) calls between these modules while the block runs."""
    by_file = {str(ROOT / m): m for m in modules}
    edges: set[Edge] = set()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event != "call" or frame.f_back is None:
            return
        callee = by_file.get(frame.f_code.co_filename)
        caller = by_file.get(frame.f_back.f_code.co_filename)
        if callee is not None and caller is not None and callee != caller:
            edges.add((caller, callee, frame.f_code.co_qualname))

    sys.setprofile(profile)
    try:
        yield edges
    finally:
        sys.setprofile(None)


def test_the_check_tells_a_callback_from_a_shared_helper() -> None:
    order = ["streamer/batches.py", "inference/barloop.py", "streamer/store.py", "streamer/mirror.py", "streamer/store_commit.py"]  # fmt: skip
    helper = ("streamer/store_commit.py", "streamer/mirror.py", "Mirror.commit")
    bounce = ("streamer/store.py", "inference/barloop.py", "BarLoop.on_closed")
    assert callbacks({helper, bounce}, order) == [bounce]


async def test_one_bar_calls_no_module_above_it_back(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    order = path_modules()
    assert len(order) > 10 and all((ROOT / m).is_file() for m in order)
    registry = tmp_path / "registry"
    write_demo_models(registry)
    async with simulated_daemon(redis_url, redis_client, registry) as run:
        await wait_until_ready(run.daemon)
        per_bar = 2 * len(run.daemon.series)  # two models
        # The bar that had just closed at start, then one to prime from: the traced one
        # is the third, sent once the second is published and primed (as an hour later).
        await close_bars(run.sim, run.sub, run.daemon, 1, per_bar)
        await bar_settled(run.daemon)
        with calls_between(order) as edges:
            await run.step(1)
            await wait_until(lambda: len(run.sub.messages) >= 3 * per_bar, what="the traced bar")
    entered = {m for edge in edges for m in edge[:2]}
    assert set(order) - entered <= IN_THE_WORKER_THREAD, "the diagram names modules a bar skips"
    assert not callbacks(edges, order), "callbacks into a module above on the bar path"
