"""The service's view cache loads each miss once, and never keeps a load a drop overtook."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bsi.server.service import _TtlCache


def slow_loads(
    calls: list[str], started: threading.Event, seconds: float = 0.3
) -> Callable[[], str]:
    def load() -> str:
        calls.append("load")
        started.set()
        time.sleep(seconds)
        return f"value {len(calls)}"

    return load


def test_threads_that_miss_together_share_one_load() -> None:
    cache = _TtlCache(60)
    calls: list[str] = []
    load = slow_loads(calls, threading.Event())
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: cache.get("view", load), range(8)))
    assert calls == ["load"]
    assert values == ["value 1"] * 8
    assert cache.get("view", load) == "value 1"  # kept


def test_other_keys_load_side_by_side() -> None:
    cache = _TtlCache(60)
    calls: list[str] = []
    load = slow_loads(calls, threading.Event(), seconds=0.5)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda key: cache.get(key, load), ["a", "b", "c", "d"]))
    assert len(calls) == 4
    assert time.monotonic() - started < 1.5  # not one after another (2 s)


@pytest.mark.parametrize(("dropped", "kept"), [("view", False), (None, False), ("another", True)])
def test_a_load_overtaken_by_a_drop_of_its_key_is_returned_but_not_kept(
    dropped: str | None, kept: bool
) -> None:
    """A drop of the key being loaded (or of every key) while it loads: the load is
    returned to its callers but not kept. A drop of another key leaves it kept."""
    cache = _TtlCache(60)
    calls: list[str] = []
    started = threading.Event()
    load = slow_loads(calls, started)
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(cache.get, "view", load)
        assert started.wait(5)
        cache.drop(dropped)  # a change lands meanwhile
        assert loading.result() == "value 1"
    if kept:
        assert cache.get("view", load) == "value 1"
        return
    assert cache.peek("view") is None
    assert cache.get("view", load) == "value 2"  # loaded again, after the change
    assert cache.get("view", load) == "value 2"


def test_a_failed_load_is_not_kept_and_the_next_caller_loads_again() -> None:
    cache = _TtlCache(60)

    def failing() -> str:
        raise OSError("database away")

    with pytest.raises(OSError, match="database away"):
        cache.get("view", failing)
    assert cache.get("view", lambda: "loaded") == "loaded"


def test_an_entry_expires() -> None:
    cache = _TtlCache(0.05)
    assert cache.get("view", lambda: 1) == 1
    time.sleep(0.1)
    assert cache.get("view", lambda: 2) == 2
