"""The exchange simulator in a process of its own, stepped over its control API.

In-process, the simulator's sending shares the daemon's event loop, so the
benchmark's feed time (the bar sent → its last candle in) also counts the
simulator building and writing every message. A real exchange runs elsewhere:
this runs ``whalecast simulate --manual`` as a child process and steps it with
``POST /_sim/advance``, so the daemon's process does only the daemon's work
(both still share this machine's cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from typing import Any

import aiohttp

BANNER = re.compile(r"^whalecast simulator on (http://\S+) ")
START_TIMEOUT_SECONDS = 120.0
WHALE_API_KEY = "bench-key"


class SimulatorProcess:
    """What the e2e benchmark uses of a simulator, served by a child process."""

    def __init__(self, *, synthetic: int, synthetic_bars: int, history_bars: int,
                 forming_updates: int) -> None:  # fmt: skip
        self.args = [
            sys.executable, "-m", "whalecast", "simulate", "--manual", "--port", "0",
            "--synthetic", str(synthetic), "--synthetic-bars", str(synthetic_bars),
            "--history-bars", str(history_bars), "--forming-updates", str(forming_updates),
            "--whale-api-key", WHALE_API_KEY,
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.state: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimulatorProcess:
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                self.base_url = await self._banner_url()
            self._http = aiohttp.ClientSession()
            await self._read_state()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain_task is not None:
            await self._drain_task  # ends at end of file: the process has exited

    async def _banner_url(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = (await self.process.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the simulator exited (code {await self.process.wait()})")
            match = BANNER.match(line)
            if match:
                # the rest of the banner is not read: drain it so the pipe never fills
                self._drain_task = asyncio.get_running_loop().create_task(self._drain())
                return match.group(1)

    async def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with contextlib.suppress(Exception):
            while await self.process.stdout.readline():
                pass

    async def _read_state(self) -> None:
        assert self._http is not None
        async with self._http.get(f"{self.base_url}/_sim/state") as response:
            response.raise_for_status()
            self.state = await response.json()

    # -- what the benchmark reads of a simulator ---------------------------------------
    @property
    def now_ms(self) -> int:
        return int(self.state["now_ms"])

    @property
    def timeframe(self) -> str:
        return str(self.state["timeframe"])

    def exchange_section(self) -> dict[str, Any]:
        sections = self.state["exchanges"]
        return dict(next(iter(sections.values())))

    def whale_section(self) -> dict[str, Any]:
        return {"enabled": True, "url": self.state["whale_url"], "api_key": WHALE_API_KEY}

    async def advance(self, bars: int = 1) -> int:
        """Play ``bars`` bars; returns when the simulator has sent them."""
        assert self._http is not None
        url = f"{self.base_url}/_sim/advance"
        async with self._http.post(url, json={"bars": bars}) as response:
            response.raise_for_status()
            self.state = await response.json()
        return int(self.state["played"])
