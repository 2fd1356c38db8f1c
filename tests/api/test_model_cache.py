"""The API's model cache: least recently used out first, one load per key however many requests
miss it together, loads of different keys in parallel, a failed load not remembered."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.model_cache import ModelCache


def built(blob: bytes) -> tuple[str, float]:
    """A stand-in for a loaded model: which blob it came from, and when."""
    return blob.decode(), time.monotonic()


def test_least_recently_used_model_is_evicted_first() -> None:
    cache = ModelCache(2, build=built)
    a = cache.get("a", lambda: b"a")
    cache.get("b", lambda: b"b")
    assert cache.get("a", lambda: b"never fetched") is a  # a hit: a is now the most recent
    cache.get("c", lambda: b"c")  # evicts b
    assert cache.keys() == ["a", "c"]
    assert cache.get("b", lambda: b"b again")[0] == "b again"  # b is loaded anew, a evicted
    assert cache.keys() == ["c", "b"]
    assert (cache.stats.hits, cache.stats.loads, cache.stats.evictions) == (1, 4, 2)


def test_concurrent_misses_on_one_key_load_it_once() -> None:
    cache = ModelCache(4, build=built)
    fetches = []
    start = threading.Barrier(16)

    def slow_fetch() -> bytes:
        fetches.append(1)
        time.sleep(0.2)  # every other request arrives while this load is under way
        return b"model"

    def request() -> tuple[str, float]:
        start.wait()
        return cache.get("k", slow_fetch)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: request(), range(16)))
    assert len(fetches) == 1
    assert all(r is results[0] for r in results)
    assert cache.stats.loads == 1


def test_different_keys_load_in_parallel() -> None:
    cache = ModelCache(8, build=built)
    start = threading.Barrier(4)

    def request(key: str) -> tuple[str, float]:
        start.wait()
        return cache.get(key, lambda: (time.sleep(0.3), key.encode())[1])

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(request, ["a", "b", "c", "d"]))
    assert [r[0] for r in results] == ["a", "b", "c", "d"]
    assert time.monotonic() - t0 < 0.3 * 4 * 0.75  # not one after the other behind one lock


def test_a_failed_load_is_not_cached_and_the_next_request_loads_again() -> None:
    cache = ModelCache(2, build=built)

    def broken() -> bytes:
        raise OSError("database went away")

    with pytest.raises(OSError, match="went away"):
        cache.get("k", broken)
    assert len(cache) == 0
    assert cache.get("k", lambda: b"fine")[0] == "fine"


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ModelCache(0)
