"""Heap freezing: the served models' objects left out of the collector's later passes.

The daemon freezes its heap once the models are loaded (:func:`freeze_heap`). A
swap unfreezes it so the replaced version can be collected, and once that
version is gone (checked at the start of a bar, ``REFREEZE_AFTER_BARS`` bars
after the swap, when no bar state refers to it any more) the heap is frozen again.
"""

from __future__ import annotations

import gc
import weakref

from whalecast.logs import get_logger

log = get_logger(__name__)

#: bars after a swap before the heap is frozen again; the bar loop keeps 4 bars of state
REFREEZE_AFTER_BARS = 6


def freeze_heap() -> None:
    """Collect, then leave every object alive now out of the collector's later passes.

    The served models' objects (TensorFlow, Keras) are most of the heap and live as
    long as they serve; with them in the oldest generation every full collection
    walked them all, a 0.4 s stall of the event loop here every few dozen bars at
    1000 series.
    """
    gc.collect()
    gc.freeze()


class FrozenHeap:
    """Unfreezes the heap when a served version is replaced; freezes it again once gone."""

    def __init__(self) -> None:
        self._replaced: list[weakref.ref[object]] = []  # swapped out of a frozen heap
        self._bars_since_swap = 0

    def replaced(self, old: object) -> None:
        """``old`` stopped serving: if it may sit in the frozen heap, let it out."""
        if gc.get_freeze_count():
            gc.unfreeze()
            self._replaced.append(weakref.ref(old))
            self._bars_since_swap = 0

    def bar_started(self) -> None:
        """Freeze the heap again once every version swapped out of it has been collected."""
        if not self._replaced:
            return
        self._bars_since_swap += 1
        if self._bars_since_swap < REFREEZE_AFTER_BARS:
            return
        gc.collect()
        self._replaced = [ref for ref in self._replaced if ref() is not None]
        if self._replaced:
            self._bars_since_swap = 0  # still referenced somewhere: look again later
            return
        gc.freeze()
        log.info("heap frozen again", after="model swap")
