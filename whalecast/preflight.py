"""Offline checks of a valid configuration: what ``whalecast check-config`` adds to parsing.

Parsing (:mod:`whalecast.settings`) checks types and ranges. These checks ask
the machine and ccxt's exchange classes, without any network: each exchange id
has a ccxt websocket OHLCV client, each symbol is a unified ``BASE/QUOTE`` name,
each timeframe is one the exchange's class lists, the model registry can be
read and the metrics port is free. Each problem names its key.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whalecast.settings import ExchangeSettings, Settings

#: An exchange id's timeframes as its client lists them; ValueError naming why the id
#: cannot be served. The command line passes the exchange adapter's lookup (the kernel
#: knows no exchange library).
TimeframesOf = Callable[[str], tuple[str, ...]]

#: ccxt's unified symbols: upper-case BASE/QUOTE, a settle currency after ':' for derivatives
UNIFIED_SYMBOL = re.compile(r"^[A-Z0-9][A-Za-z0-9._-]*/[A-Z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$")


@dataclass(frozen=True)
class Finding:
    key: str  # e.g. "exchanges.0.id"
    message: str
    fatal: bool = True  # False: worth knowing, not wrong (e.g. no registry yet)

    def line(self) -> str:
        return f"  {self.key}: {self.message}"


@dataclass(frozen=True)
class Preflight:
    problems: tuple[Finding, ...]  # each makes check-config exit 2
    notes: tuple[Finding, ...]  # worth knowing, not wrong (e.g. no registry yet)


def preflight(settings: Settings, timeframes_of: TimeframesOf) -> Preflight:
    problems: list[Finding] = []
    for index, entry in enumerate(settings.exchanges):
        problems += exchange_findings(f"exchanges.{index}", entry, timeframes_of)
    registry = registry_finding(settings.inference.registry)
    port = port_finding(settings.metrics.host, settings.metrics.port)
    found = [f for f in (registry, port) if f is not None]
    problems += [f for f in found if f.fatal]
    return Preflight(tuple(problems), tuple(f for f in found if not f.fatal))


def exchange_findings(
    key: str, entry: ExchangeSettings, timeframes_of: TimeframesOf
) -> list[Finding]:
    found = [
        Finding(f"{key}.symbols.{i}", f"{symbol!r} is not a unified symbol like 'BTC/USDT' "
                "(upper-case BASE/QUOTE, ccxt's names, not the exchange's market id)")
        for i, symbol in enumerate(entry.symbols)
        if not UNIFIED_SYMBOL.fullmatch(symbol)
    ]  # fmt: skip
    try:
        listed = timeframes_of(entry.id)
    except ValueError as e:
        return [Finding(f"{key}.id", str(e)), *found]
    if listed and entry.timeframe not in listed:
        found.append(Finding(f"{key}.timeframe", f"{entry.id} does not offer {entry.timeframe!r} "
                             f"(ccxt lists {', '.join(listed)})"))  # fmt: skip
    return found


def registry_finding(registry: Path) -> Finding | None:
    key = "inference.registry"
    if not registry.exists():
        return Finding(key, f"{registry} does not exist yet: train a model into it with "
                       "'whalecast train', or try 'whalecast demo'", fatal=False)  # fmt: skip
    if not registry.is_dir():
        return Finding(key, f"{registry} is not a directory")
    if not os.access(registry, os.R_OK | os.X_OK):
        return Finding(key, f"{registry} cannot be read by this user (uid {os.getuid()})")
    return None


def port_finding(host: str, port: int) -> Finding | None:
    """Binds ``host:port`` for a moment; port 0 (any free port) is always fine."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return Finding("metrics.host", f"{host!r} is not an address of this machine: {e.strerror}")
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return Finding("metrics.port", f"{port} on {host} is already in use")
            return Finding("metrics.host", f"cannot listen on {host}:{port}: {e.strerror}")
    return None
