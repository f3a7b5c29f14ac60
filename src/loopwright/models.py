"""``lw.models``: the model registry on the default client.

``lw.models.load("churn@champion")`` and ``lw.models.load("churn/3")`` give a
:class:`~loopwright.registry.model.LoadedModel` (``predict``, ``predict_proba``) whatever the
flavor; the bytes are verified against the version's digest and nothing is unpickled unless
``trusted=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loopwright.fluent import default_client

if TYPE_CHECKING:
    from loopwright.registry.entities import ApprovalRequest, Evaluation, ModelVersion
    from loopwright.registry.model import LoadedModel


def load(uri: str, *, trusted: bool | list[str] = False) -> LoadedModel:
    return default_client().registry.load(uri, trusted=trusted)


def get(uri: str) -> ModelVersion:
    return default_client().registry.resolve(uri)


def register(name: str, run_id: str, path: str = "model", **kw: Any) -> ModelVersion:
    return default_client().registry.register(name, run_id, path, **kw)


def set_alias(name: str, alias: str, version: int, **kw: Any) -> ModelVersion:
    return default_client().registry.set_alias(name, alias, version, **kw)


def evaluate(uri: str, data: Any = None) -> Evaluation:
    return default_client().registry.evaluate(uri, data)


def request(name: str, alias: str, version: int, comment: str = "") -> ApprovalRequest:
    return default_client().registry.request_alias(name, alias, version, comment)
