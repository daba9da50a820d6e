"""Whale history in Whale Alert's REST transactions format, for training and warm-up.

``GET /v1/transactions`` answers pages like::

    {"result": "success", "cursor": "2bc7e46-2bc7e46-5c66c0a7", "count": 1,
     "transactions": [{"blockchain": "ethereum", "symbol": "eth", "id": "1131405929",
       "transaction_type": "transfer", "hash": "0x6c8a…",
       "from": {"address": "0x28c6c0…", "owner": "binance", "owner_type": "exchange"},
       "to": {"address": "0x9bf4001d…", "owner_type": "unknown"},
       "timestamp": 1730731200, "amount": 12000, "amount_usd": 31400000.0,
       "transaction_count": 1}]}

Each transaction becomes one :class:`WhaleTransfer` (here an ETH outflow). A file
holds one such page or one page per line (JSON lines); bad transactions are
counted by reason and skipped, duplicates (same blockchain, hash and symbol) kept once.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.whale_alert import WhaleReject, block_time_ms, usd_or_amount
from whalecast.domain import WhaleTransfer, classify_flow


@dataclass
class WhaleHistory:
    """Transfers read from one or more pages, oldest first, and what was refused."""

    transfers: list[WhaleTransfer] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    cursor: str | None = None  # of the last page read (to continue the download)


def _owner_type(side: object) -> str:
    if not isinstance(side, dict):
        raise WhaleReject("malformed", "from/to")
    return str(side.get("owner_type") or "unknown")


def parse_transaction(tx: Mapping[str, Any]) -> WhaleTransfer:
    """One transaction of a page; raises :class:`WhaleReject`."""
    blockchain, symbol, timestamp = tx.get("blockchain"), tx.get("symbol"), tx.get("timestamp")
    if not isinstance(blockchain, str) or not isinstance(symbol, str) or not symbol:
        raise WhaleReject("malformed", "blockchain or symbol")
    ts_ms = block_time_ms(timestamp)
    amount = usd_or_amount(tx.get("amount"), "amount")
    usd = usd_or_amount(tx.get("amount_usd"), "amount_usd")
    from_type, to_type = _owner_type(tx.get("from")), _owner_type(tx.get("to"))
    flow = classify_flow(from_type, to_type)
    return WhaleTransfer(ts_ms, blockchain, symbol.upper(), amount, usd, from_type, to_type, flow)


def parse_pages(pages: Iterable[Mapping[str, Any]]) -> WhaleHistory:
    """Transfers of every page, deduplicated and sorted by time."""
    history = WhaleHistory()
    seen: set[tuple[str, str, str]] = set()
    for page in pages:
        if page.get("result") != "success" or not isinstance(page.get("transactions"), list):
            history.rejected["malformed"] += 1
            continue
        cursor = page.get("cursor")
        history.cursor = cursor if isinstance(cursor, str) else history.cursor
        for tx in page["transactions"]:
            try:
                if not isinstance(tx, dict):
                    raise WhaleReject("malformed", "transaction")
                transfer = parse_transaction(tx)
            except WhaleReject as e:
                history.rejected[e.reason] += 1
                continue
            key = (transfer.blockchain, str(tx.get("hash") or tx.get("id") or ""), transfer.asset)
            if key[1] and key in seen:
                history.rejected["duplicate"] += 1
                continue
            seen.add(key)
            history.transfers.append(transfer)
    history.transfers.sort(key=lambda t: t.ts_ms)
    return history


def read_pages(path: Path) -> list[dict[str, Any]]:
    """The pages in a file (``.json``/``.jsonl``, optionally gzipped); raises ValueError."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    if isinstance(whole, list):
        return [p for p in whole if isinstance(p, dict)]
    pages = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            page = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not JSON: {e}") from e
        pages.append(page if isinstance(page, dict) else {})
    return pages


def load_whale_history(paths: Iterable[Path]) -> WhaleHistory:
    """Whale transfers from files of REST transaction pages."""
    return parse_pages(page for path in paths for page in read_pages(Path(path)))
