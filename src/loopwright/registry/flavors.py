"""Model flavors: how a model becomes bytes in the registry and back, and what loading may trust.

Loading a model is running code the model's author chose, so every loader here is safe by
default. scikit-learn models are stored with skops, which rebuilds only types it knows to be
harmless; anything else must be named by the caller after review (``trusted=[...]``). Plain
pickle can execute arbitrary code on load and is only available behind ``trusted=True``.

skops is imported lazily, so the registry works without the ``sklearn`` extra installed.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loopwright.errors import InvalidInput, PermissionDenied

__all__ = [
    "FLAVORS",
    "FLAVOR_PICKLE",
    "FLAVOR_SKLEARN",
    "PICKLE_FILE_NAME",
    "SKLEARN_FILE_NAME",
    "Flavor",
    "load_pickle",
    "load_sklearn",
    "save_pickle",
    "save_sklearn",
]

FLAVOR_SKLEARN = "sklearn"
SKLEARN_FILE_NAME = "model.skops"
FLAVOR_PICKLE = "pickle"
PICKLE_FILE_NAME = "model.pkl"

_PICKLE_PROTOCOL = 5  # fixed, not HIGHEST_PROTOCOL, so the bytes do not depend on the Python


@dataclass(frozen=True, slots=True)
class Flavor:
    """A way of storing models: its name, the artifact's file name, and the two codecs."""

    name: str
    file_name: str
    save: Callable[[Any], bytes]
    load: Callable[..., Any]  # load(data, *, trusted=...)


def save_sklearn(model: Any) -> bytes:
    """Serialise a scikit-learn estimator with skops (a zip of JSON + arrays, not a pickle)."""
    sio = _skops_io()
    return sio.dumps(model)


def load_sklearn(data: bytes, *, trusted: bool | Sequence[str] = False) -> Any:
    """Rebuild an estimator saved by :func:`save_sklearn`.

    Types skops does not trust by default are refused with :class:`PermissionDenied`, which
    lists them; review them and pass ``trusted=[...]`` (or ``trusted=True`` for bytes you
    produced yourself). Bytes that are not a skops file raise :class:`InvalidInput`.
    """
    sio = _skops_io()
    try:
        untrusted = sio.get_untrusted_types(data=data)
        allowed = _allowed_types(untrusted, trusted)
        _refuse_untrusted([t for t in untrusted if t not in allowed])
        return sio.loads(data, trusted=allowed)
    except zipfile.BadZipFile as exc:
        raise InvalidInput("the bytes are not a skops model file", field="data") from exc


def save_pickle(obj: Any) -> bytes:
    """Plain pickle, for objects skops cannot store; loading them needs ``trusted=True``."""
    return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def load_pickle(data: bytes, *, trusted: bool = False) -> Any:
    """Unpickle only on an explicit ``trusted=True``: unpickling runs code chosen by whoever
    wrote the bytes, so it must be a decision, never a default."""
    if trusted is not True:
        raise PermissionDenied(
            "refusing to unpickle: pickle can execute arbitrary code on load; pass trusted=True "
            "only for bytes you produced or reviewed",
            field="trusted",
        )
    return pickle.loads(data)


FLAVORS: dict[str, Flavor] = {
    FLAVOR_SKLEARN: Flavor(FLAVOR_SKLEARN, SKLEARN_FILE_NAME, save_sklearn, load_sklearn),
    FLAVOR_PICKLE: Flavor(FLAVOR_PICKLE, PICKLE_FILE_NAME, save_pickle, load_pickle),
}


#: scikit-learn's own plain data holders that skops does not list as trusted (yet). Loading them
#: sets attributes on a known class and runs no code from the file, so they need no review.
KNOWN_SAFE_TYPES = frozenset({"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})


def _allowed_types(untrusted: list[str], trusted: bool | Sequence[str]) -> list[str]:
    if trusted is True:
        return list(untrusted)
    if trusted is False:
        return [t for t in untrusted if t in KNOWN_SAFE_TYPES]
    if isinstance(trusted, str | bytes) or not isinstance(trusted, Sequence):
        raise InvalidInput(
            "trusted must be True, False or a list of fully qualified type names",
            field="trusted",
        )
    return [str(t) for t in trusted] + [t for t in untrusted if t in KNOWN_SAFE_TYPES]


def _refuse_untrusted(missing: list[str]) -> None:
    if missing:
        raise PermissionDenied(
            f"the model file contains types that are not trusted: {', '.join(missing)}; "
            f"review them, then pass trusted={missing!r} to load it",
            field="trusted",
            untrusted_types=missing,
        )


def _skops_io() -> Any:
    try:
        import skops.io as sio
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
        raise ModuleNotFoundError(
            "the sklearn flavor needs skops: pip install 'loopwright[sklearn]'"
        ) from exc
    return sio
