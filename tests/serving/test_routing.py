"""The router: sticky keys, monotone under weight changes, the weight respected in aggregate."""

from __future__ import annotations

import math
import threading

import pytest

from loopwright.errors import InvalidInput
from loopwright.serving.routing import ROUTES, Router


def test_sticky_keys_are_deterministic_across_routers() -> None:
    a, b = Router(0.3), Router(0.3, seed=99)
    keys = [f"user-{i}" for i in range(500)]
    assert [a.choose(k) for k in keys] == [b.choose(k) for k in keys] == [a.choose(k) for k in keys]


def test_canary_share_within_three_sigma() -> None:
    weight, n = 0.2, 20_000
    router = Router(weight)
    share = sum(router.choose(f"key-{i}") == "canary" for i in range(n)) / n
    assert abs(share - weight) < 3 * math.sqrt(weight * (1 - weight) / n)


def test_raising_the_weight_only_moves_keys_to_the_canary() -> None:
    router = Router(0.1)
    keys = [f"k{i}" for i in range(2000)]
    before = {k: router.choose(k) for k in keys}
    router.set_canary_weight(0.4)
    after = {k: router.choose(k) for k in keys}
    assert all(after[k] == "canary" for k in keys if before[k] == "canary")
    assert sum(v == "canary" for v in after.values()) > sum(v == "canary" for v in before.values())
    assert router.canary_weight == 0.4


def test_without_a_key_random_with_the_weight_and_seeded() -> None:
    n, weight = 20_000, 0.25
    router = Router(weight, seed=1)
    picks = [router.choose(None) for _ in range(n)]
    assert set(picks) <= set(ROUTES)
    assert abs(picks.count("canary") / n - weight) < 3 * math.sqrt(weight * (1 - weight) / n)
    again = Router(weight, seed=1)
    assert [again.choose() for _ in range(n)] == picks


def test_edges_and_bad_weights() -> None:
    assert {Router(0.0).choose(f"{i}") for i in range(200)} == {"champion"}
    assert {Router(1.0).choose(f"{i}") for i in range(200)} == {"canary"}
    with pytest.raises(InvalidInput) as err:
        Router(0.5).set_canary_weight(1.5)
    assert err.value.field == "canary_weight"


def test_thread_safe() -> None:
    router = Router(0.5, seed=3)
    counts: list[int] = []

    def work() -> None:
        counts.append(sum(router.choose() == "canary" for _ in range(2000)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counts) == 8 and 0.4 < sum(counts) / 16_000 < 0.6
