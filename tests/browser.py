"""A real headless Chromium for the web page's tests, driven over the DevTools protocol.

Debian's ``chromium`` package is started with a fresh profile and
``--remote-debugging-port=0``; the port it picked is read from the
``DevToolsActivePort`` file it writes, and one page target is driven over a
websocket with aiohttp (already a dependency): navigate, evaluate JavaScript,
take screenshots. No chromium-driver or Selenium is needed for that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.polling import wait_until_true

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)  # fmt: skip


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (scripts/bootstrap.sh and .ci/run install it)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


class Page:
    """One browser tab: DevTools commands over its websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") != ident:
                continue  # an event or another reply
            if "error" in data:
                raise RuntimeError(f"{method}: {data['error']}")
            result: dict[str, Any] = data.get("result", {})
            return result
        raise RuntimeError("the browser closed the DevTools connection")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout_seconds: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        value: Any = None

        async def truthy() -> bool:
            nonlocal value
            value = await self.evaluate(expression)
            return bool(value)

        await wait_until_true(truthy, timeout_seconds, what=expression)
        return value

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> Path:
        reply = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(reply["data"]))
        return path


def _read_port(active: Path) -> int | None:
    try:
        text = active.read_text().split()
    except FileNotFoundError:
        return None
    return int(text[0]) if text else None


async def _debugger_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    async with asyncio.timeout(60):
        while (port := await asyncio.to_thread(_read_port, profile / "DevToolsActivePort")) is None:
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with status {process.returncode}")
            await asyncio.sleep(0.05)
    return port


@contextlib.asynccontextmanager
async def browser_page(profile: Path, width: int = 1600, height: int = 1000) -> AsyncIterator[Page]:
    """A headless Chromium with an empty profile in ``profile`` and one page of this size."""
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    command = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}",
               "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        port = await _debugger_port(profile, process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Emulation.setDeviceMetricsOverride", width=width,
                                height=height, deviceScaleFactor=1, mobile=False)  # fmt: skip
                yield page
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
