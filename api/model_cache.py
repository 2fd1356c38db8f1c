"""The API process's cache of loaded models: an LRU of `Predictor`s, shared by the request threads.

Keys name one stored blob exactly: (experiment id, artifact row id, row creation time, sha256).
A replaced artifact gets a new row, so a request can only ever be answered by the model its
experiment's row names now; an evicted or replaced model is simply loaded again.

Concurrent misses on one key load it once: the first request takes the key's lock and loads,
the others wait on that lock and then find the model. Loads of different keys run in parallel;
the cache's own lock is held only to look up, insert and evict, never while loading.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

if TYPE_CHECKING:
    from ml.predict import Predictor


_torch_configured = False
_torch_lock = threading.Lock()
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK_BYTES = 4 * 1024 * 1024


def _return_large_blocks() -> None:
    """Have glibc map every allocation of 4 MiB or more on its own and unmap it when freed.

    Predictions run a wide network a chunk of rows at a time (ml.predict), each chunk allocating
    and freeing the same few large activations. With glibc's default (a threshold that rises to
    the size of the first block freed), those blocks come from the heap, and the small output
    tensor kept from each chunk lands between them: the heap fragments and grows by a chunk's
    activations per chunk (1 GB for one 4,096-row request to a 65,536-wide layer, measured). A
    fixed threshold keeps the request's peak at one chunk's activations."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own policy
        pass


def _configure_torch() -> None:
    """One thread per prediction and no oneDNN, set once before the first model is built.

    Requests already run in parallel in the threadpool, and a small network's forward pass is
    too short to split: with the default (one thread per core) every request also wakes the
    other cores, which costs the exercise 2 CNN 3x the CPU time per request; oneDNN's setup per
    call costs more than it saves on small convolutions (bench/README.md, "Predictions")."""
    global _torch_configured
    with _torch_lock:
        if not _torch_configured:
            import torch

            torch.set_num_threads(1)
            torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
            _return_large_blocks()
            _torch_configured = True


def _load_predictor(blob: bytes) -> Predictor:
    _configure_torch()
    from ml.predict import load_predictor  # torch: imported on first use, not when the API starts

    return load_predictor(blob)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # requests that found no model and loaded it (or waited for its load)
    loads: int = 0  # models built from a blob
    evictions: int = 0


class ModelCache:
    def __init__(self, capacity: int, build: Callable[[bytes], Any] = _load_predictor) -> None:
        if capacity < 1:
            raise ValueError("the model cache holds at least one model")
        self.capacity = capacity
        self._build = build
        self._lock = threading.Lock()
        self._models: OrderedDict[Hashable, Any] = OrderedDict()  # least recently used first
        self._loading: dict[Hashable, threading.Lock] = {}
        self.stats = CacheStats()

    def get(self, key: Hashable, fetch: Callable[[], bytes]) -> Predictor:
        """The model for `key`, built from `fetch()` (the blob) on a miss."""
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return model
            self.stats.misses += 1
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                model = self._models.get(key)
                if model is not None:  # another request loaded it while this one waited
                    self._models.move_to_end(key)
                    return model
            try:
                model = self._build(fetch())
            except BaseException:
                with self._lock:
                    self._unmark(key, key_lock)  # the next request for the key tries again
                raise
            with self._lock:
                # Inserted and unmarked in one step: a request arriving now finds the model.
                self.stats.loads += 1
                self._models[key] = model
                self._models.move_to_end(key)
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                    self.stats.evictions += 1
                self._unmark(key, key_lock)
            return model

    def _unmark(self, key: Hashable, key_lock: threading.Lock) -> None:
        """Forget the key's load lock (called holding self._lock)."""
        if self._loading.get(key) is key_lock:
            del self._loading[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._models)


async def get_model_cache(request: Request) -> ModelCache:
    # async: an attribute read runs on the event loop; a sync dependency costs a threadpool hop
    return request.app.state.model_cache


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
