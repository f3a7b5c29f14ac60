"""Which route answers a request: the champion or the canary.

With a key (a user or session id the client sends), the choice is sticky: the key's SHA-256
is read as a number ``u`` in [0, 1) and the canary answers when ``u < weight``. The same key
therefore always gets the same route for a given weight, and raising the weight only moves keys
from the champion to the canary, never back. Without a key the choice is random with the weight.
Shadows are not routed: they see every request.
"""

from __future__ import annotations

import hashlib
import random
import threading

from loopwright.errors import InvalidInput

__all__ = ["ROUTES", "Router", "key_position"]

ROUTES = ("champion", "canary")

_SCALE = float(2**64)


def key_position(key: str) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of its SHA-256, big-endian."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


class Router:
    """Splits traffic between the champion and a canary; safe to share between threads."""

    def __init__(self, canary_weight: float = 0.0, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._weight = _checked(canary_weight)

    @property
    def canary_weight(self) -> float:
        return self._weight

    def set_canary_weight(self, weight: float) -> None:
        """0 sends everything to the champion (e.g. after a rollback); must be in [0, 1]."""
        checked = _checked(weight)
        with self._lock:
            self._weight = checked

    def choose(self, key: str | None = None) -> str:
        """``"champion"`` or ``"canary"``: sticky for a key, random without one."""
        weight = self._weight
        if weight <= 0.0:
            return "champion"
        if key is not None:
            position = key_position(key)
        else:
            with self._lock:
                position = self._random.random()
        return "canary" if position < weight else "champion"


def _checked(weight: float) -> float:
    value = float(weight)
    if not 0.0 <= value <= 1.0:
        message = f"canary weight must be in [0, 1], got {weight!r}"
        raise InvalidInput(message, field="canary_weight")
    return value
