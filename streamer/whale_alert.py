"""The Whale Alert adapter: one ``alert`` message of its websocket API to our transfers.

Everything specific to Whale Alert's message shape stops here: the amounts and
their symbols, the owner types of the sending and receiving sides (change back
to the sender is not a receiver), and the key that tells a repeated alert.
:class:`streamer.whale.WhaleFeed` keeps the connection; this module is pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from whalecast.domain import WhaleTransfer, classify_flow


class WhaleReject(Exception):
    """An alert that cannot be used; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def usd_or_amount(value: object, field: str) -> float:
    """A finite, non-negative amount from a JSON number or decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WhaleReject("malformed", f"{field} is not a number")
    try:
        number = float(value)
    except ValueError as e:
        raise WhaleReject("malformed", f"{field} is not a number") from e
    if not math.isfinite(number) or number < 0:
        raise WhaleReject("bad_amount", f"{field} = {value!r}")
    return number


def _largest(entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    def amount(entry: Mapping[str, Any]) -> float:
        try:
            return float(entry.get("amount") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    return max(entries, key=amount)


#: Owner names that name nobody: an output to such an owner is not change by its name.
ANONYMOUS_OWNERS = frozenset({"", "unknown"})
#: Block times (Unix seconds) from year 3000 on are malformed: far larger ones would not
#: even convert to milliseconds (a huge float times 1000 is infinite).
LAST_TIMESTAMP_S = 32_503_680_000


def block_time_ms(timestamp: object) -> int:
    """A transfer's block time, Unix seconds as a JSON number, in ms; both of Whale
    Alert's formats (the websocket alert, the REST transaction) carry it so."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise WhaleReject("malformed", "timestamp")
    if not math.isfinite(timestamp) or not 0 < timestamp < LAST_TIMESTAMP_S:
        raise WhaleReject("malformed", "timestamp")
    return int(timestamp * 1000)


def is_change(output: Mapping[str, Any], addresses: set[str], owners: set[str]) -> bool:
    """An output back to the sender: to one of the inputs' addresses, or to a named input owner."""
    address, owner = output.get("address"), str(output.get("owner") or "").lower()
    if isinstance(address, str) and address in addresses:
        return True
    return owner not in ANONYMOUS_OWNERS and owner in owners


def _sides(sub: Mapping[str, Any]) -> tuple[str, str] | None:
    """Owner types (from, to) of one sub-transaction; change back to the sender is skipped."""
    inputs = [e for e in sub.get("inputs") or [] if isinstance(e, dict)]
    outputs = [e for e in sub.get("outputs") or [] if isinstance(e, dict)]
    if not inputs or not outputs:
        return None
    addresses = {e["address"] for e in inputs if isinstance(e.get("address"), str) and e["address"]}
    owners = {str(e.get("owner") or "").lower() for e in inputs}
    received = [e for e in outputs if not is_change(e, addresses, owners)]
    source, target = _largest(inputs), _largest(received or outputs)
    return str(source.get("owner_type") or "unknown"), str(target.get("owner_type") or "unknown")


def _owner_type(side: object) -> str:
    if isinstance(side, dict):
        return str(side.get("owner_type") or "unknown")
    return "unknown"  # a bare owner name says nothing about its type


def owner_types(alert: Mapping[str, Any], symbol: str) -> tuple[str, str]:
    """(from, to) owner types: the sub-transaction of ``symbol``, else the from/to fields."""
    transaction = alert.get("transaction")
    subs = transaction.get("sub_transactions") if isinstance(transaction, dict) else None
    if isinstance(subs, list):
        candidates = [s for s in subs if isinstance(s, dict)]
        matching = [s for s in candidates if str(s.get("symbol", "")).upper() == symbol]
        for sub in matching or candidates:
            sides = _sides(sub)
            if sides is not None:
                return sides
    return _owner_type(alert.get("from")), _owner_type(alert.get("to"))


def parse_alert(alert: Mapping[str, Any]) -> list[WhaleTransfer]:
    """The transfers of one ``alert`` message; raises :class:`WhaleReject` when unusable.

    A real-shaped alert (an unattributed wallet pays an exchange and takes its change
    back to its own address, the change being the larger output)::

        {"type": "alert", "channel_id": "3f2a9c1d", "timestamp": 1730730600,
         "blockchain": "bitcoin", "transaction_type": "transfer", "from": "unknown",
         "to": "binance",
         "amounts": [{"symbol": "BTC", "amount": 784.0, "value_usd": 53625145.0}],
         "text": "784 #BTC (53,625,145 USD) transferred from unknown wallet to #binance",
         "transaction": {"height": 869450, "index_in_block": 0, "timestamp": 1730730600,
           "hash": "9b1c0e…", "fee": "0.0001", "fee_symbol": "BTC",
           "fee_symbol_price": "68399.93",
           "sub_transactions": [{"symbol": "BTC", "unit_price_usd": "68399.93",
             "transaction_type": "transfer",
             "inputs": [{"amount": "2613.3", "address": "bc1qm3…", "owner": "",
                         "owner_type": "unknown", "address_type": "unknown"}],
             "outputs": [{"amount": "784.0", "address": "bc1qx9…", "owner": "binance",
                          "owner_type": "exchange", "address_type": "hot_wallet"},
                         {"amount": "1829.3", "address": "bc1qm3…", "owner": "",
                          "owner_type": "unknown", "address_type": "unknown"}]}]}}

    gives one BTC transfer of 784 (53.6 M USD), ``unknown → exchange``: an inflow. An
    output to an address that is also an input is change whatever its owner says (here
    ``""``, elsewhere ``"unknown"``); an output to a named owner of an input (an
    exchange's other wallet) is change too. What remains decides the receiving side.
    """
    ts_ms = block_time_ms(alert.get("timestamp"))
    blockchain, amounts = alert.get("blockchain"), alert.get("amounts")
    if not isinstance(blockchain, str) or not isinstance(amounts, list) or not amounts:
        raise WhaleReject("malformed", "blockchain or amounts")
    return [_transfer(alert, entry, blockchain, ts_ms) for entry in amounts]


def _transfer(
    alert: Mapping[str, Any], entry: object, blockchain: str, ts_ms: int
) -> WhaleTransfer:
    """One ``amounts`` entry of an alert as a transfer."""
    symbol = entry.get("symbol") if isinstance(entry, dict) else None
    if not isinstance(symbol, str) or not symbol:
        raise WhaleReject("malformed", "amounts[].symbol")
    assert isinstance(entry, dict)
    amount = usd_or_amount(entry.get("amount"), "amount")
    usd = usd_or_amount(entry.get("value_usd"), "value_usd")
    asset = symbol.upper()
    from_type, to_type = owner_types(alert, asset)
    flow = classify_flow(from_type, to_type)
    return WhaleTransfer(ts_ms, blockchain, asset, amount, usd, from_type, to_type, flow)


def transfer_key(alert: Mapping[str, Any]) -> tuple[str, str] | None:
    transaction = alert.get("transaction")
    tx_hash = transaction.get("hash") if isinstance(transaction, dict) else None
    if not isinstance(tx_hash, str) or not tx_hash:
        return None
    symbols = ",".join(sorted(str(a.get("symbol")) for a in alert["amounts"]))
    return f"{alert.get('blockchain')}:{tx_hash}", symbols
