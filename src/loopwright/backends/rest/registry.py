"""The model registry over HTTP: the same calls as the embedded ``RegistryService``.

Every rule-bearing call (register, set_alias, decide, evaluate, ...) is one request, and the
server's service applies the rules; this class only translates arguments and answers. It reuses
the tracking store's HTTP helper, so URLs, retries and the error boundary (``from_wire``) are the
ones the tracking and artifact stores use.

Three calls move bytes instead of metadata:

* :meth:`RestRegistry.load` resolves the version on the server, downloads the model file through
  the artifact store (which verifies its digest) and deserialises it here, with the same
  ``trusted`` rules as embedded.
* :meth:`RestRegistry.register_dataset` sends a DataFrame as Parquet; :meth:`load_dataset` reads
  the dataset's Parquet blob back through the artifact store.

Who acts: every request carries ``X-Loopwright-User`` (``user`` if given, else the acting user of
:func:`~loopwright.governance.audit.current_actor`), which a server with auth off records in its
audit trail, just as the embedded registry records the local user.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import orjson

from loopwright.backends.rest import wire
from loopwright.backends.rest.store import USER_HEADER, RestArtifactStore, RestTrackingStore
from loopwright.errors import InvalidInput
from loopwright.governance.audit import AuditEvent, VerifyResult, current_actor
from loopwright.registry.entities import (
    ApprovalRequest,
    Decision,
    Evaluation,
    ModelRef,
    ModelVersion,
    RegisteredModel,
    RequestStatus,
)

if TYPE_CHECKING:
    import pandas as pd

    from loopwright.governance.gates import GatePolicy
    from loopwright.registry.model import LoadedModel

__all__ = ["USER_HEADER", "RestRegistry"]

_JSON = {"content-type": "application/json"}
_PARQUET = {"content-type": "application/octet-stream"}


class RestRegistry:
    """The registry service of a loopwright server, called over its REST API."""

    def __init__(
        self,
        tracking: RestTrackingStore,
        artifacts: RestArtifactStore,
        *,
        user: str | None = None,
    ) -> None:
        self.tracking = tracking
        self.artifacts = artifacts
        self.user = user
        self._http = tracking._http  # one HTTP boundary for the whole client

    def __repr__(self) -> str:
        return f"RestRegistry({self._http.base_url!r})"

    # -- models -----------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        body = {"name": name, "description": description, "tags": tags}
        return wire.model_from_dict(self._call("POST", ("models",), body))

    def get_model(self, name: str) -> RegisteredModel:
        return wire.model_from_dict(self._call("GET", ("models", name)))

    def search_models(
        self,
        name_like: str | None = None,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
    ) -> list[RegisteredModel]:
        params = _params(name_like=name_like, tag=_tag(tag), alias=alias)
        data = self._call("GET", ("models",), params=params)
        return [wire.model_from_dict(m) for m in data["models"]]

    def update_model(
        self, name: str, *, description: str | None = None, tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        body = {"description": description, "tags": tags or None}
        return wire.model_from_dict(self._call("PATCH", ("models", name), body))

    def set_policy(
        self,
        name: str,
        policy: GatePolicy | dict[str, Any] | str | None,
        reason: str | None = None,
    ) -> RegisteredModel:
        """Attach a gate policy (a ``GatePolicy``, a dict or YAML text); ``None`` removes it."""
        if policy is None:
            data = self._call("DELETE", ("models", name, "policy"), params=_params(reason=reason))
        else:
            body = {"policy": _policy_payload(policy), "reason": reason}
            data = self._call("PUT", ("models", name, "policy"), body)
        return wire.model_from_dict(data)

    def policy(self, name: str) -> GatePolicy | None:
        from loopwright.governance.gates import GatePolicy

        raw = self.get_model(name).policy
        return None if raw is None else GatePolicy.from_dict(raw)

    # -- versions ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        run_id: str,
        path: str = "model",
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        reference_data: pd.DataFrame | None = None,
    ) -> ModelVersion:
        """A new version from the model a run logged under ``path`` (creates the model if new).

        The server computes the reference profile from the run's training dataset when its
        content was kept (``register_dataset`` with the frame the run logged); a frame cannot
        be sent with the registration itself.
        """
        if reference_data is not None:
            raise InvalidInput(
                "reference_data is not sent over REST: register the training frame with "
                "register_dataset() and log it on the run; the server profiles it",
                field="reference_data",
            )
        body = {"run_id": run_id, "path": path, "description": description, "tags": tags}
        return wire.version_from_dict(self._call("POST", ("models", name, "versions"), body))

    def resolve(self, uri: str | ModelRef) -> ModelVersion:
        """``churn/3``, ``churn/latest`` or ``churn@champion`` -> the version."""
        ref = uri if isinstance(uri, ModelRef) else ModelRef.parse(uri)
        target = str(ref.version) if ref.version is not None else str(ref.alias)
        data = self._call("GET", ("models", ref.name, "resolve"), params={"ref": target})
        return wire.version_from_dict(data)

    def get_version(self, name: str, version: int) -> ModelVersion:
        return wire.version_from_dict(self._call("GET", ("models", name, "versions", str(version))))

    def search_versions(
        self,
        name: str | None = None,
        *,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
        run_id: str | None = None,
        digest: str | None = None,
        dataset_digest: str | None = None,
    ) -> list[ModelVersion]:
        params = _params(tag=_tag(tag), alias=alias, run_id=run_id, digest=digest,
                         dataset_digest=dataset_digest)  # fmt: skip
        # Under the model's path when there is one, so roles granted per model apply.
        path = ("versions",) if name is None else ("models", name, "versions")
        data = self._call("GET", path, params=params)
        return [wire.version_from_dict(v) for v in data["versions"]]

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> ModelVersion:
        """Tag a version (the only thing about a version that may change)."""
        path = ("models", name, "versions", str(version))
        return wire.version_from_dict(self._call("PATCH", path, {"tags": tags}))

    def load(
        self, uri: str | ModelRef | ModelVersion, *, trusted: bool | list[str] = False
    ) -> LoadedModel:
        """Resolve on the server, download the verified bytes, deserialise here."""
        from loopwright.registry.model import load_version

        mv = uri if isinstance(uri, ModelVersion) else self.resolve(uri)
        return load_version(mv, self.artifacts, trusted=trusted)

    # -- aliases and approvals ----------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        reason: str | None = None,
        override: str | None = None,
    ) -> ModelVersion:
        """Move ``alias``; the server checks gates and approvals (``override`` needs admin)."""
        body = {"version": version, "reason": reason, "override": override}
        return wire.version_from_dict(self._call("PUT", ("models", name, "aliases", alias), body))

    def delete_alias(self, name: str, alias: str, reason: str | None = None) -> None:
        self._call("DELETE", ("models", name, "aliases", alias), params=_params(reason=reason))

    def request_alias(
        self, name: str, alias: str, version: int, comment: str = ""
    ) -> ApprovalRequest:
        body = {"alias": alias, "version": version, "comment": comment}
        return wire.request_from_dict(self._call("POST", ("models", name, "requests"), body))

    def decide(
        self, request_id: str, decision: Decision | str, comment: str = ""
    ) -> ApprovalRequest:
        """Approve or reject; the server refuses a decision on one's own request."""
        verb = "approve" if Decision(decision) is Decision.APPROVE else "reject"
        data = self._call("POST", ("requests", request_id, verb), {"comment": comment})
        return wire.request_from_dict(data)

    def get_request(self, request_id: str) -> ApprovalRequest:
        return wire.request_from_dict(self._call("GET", ("requests", request_id)))

    def list_requests(
        self, name: str | None = None, status: RequestStatus | str | None = None
    ) -> list[ApprovalRequest]:
        state = RequestStatus(status).value if status else None
        data = self._call("GET", ("requests",), params=_params(model=name, status=state))
        return [wire.request_from_dict(r) for r in data["requests"]]

    def cancel_request(self, request_id: str, reason: str = "") -> ApprovalRequest:
        data = self._call("POST", ("requests", request_id, "cancel"), {"reason": reason})
        return wire.request_from_dict(data)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, uri: str, data: pd.DataFrame | str | None = None) -> Evaluation:
        """Evaluate on the server; a DataFrame is first registered (by content) so it can be.

        The frame is kept like any dataset and the evaluation names it by its digest.
        """
        ref = ModelRef.parse(uri)
        version = ref.version if ref.version is not None else self.resolve(ref).version
        dataset = data
        if data is not None and not isinstance(data, str):
            dataset = self.register_dataset(data, f"{ref.name}/{version} evaluation data")
        path = ("models", ref.name, "versions", str(version), "evaluate")
        return wire.evaluation_from_dict(self._call("POST", path, {"dataset": dataset or None}))

    def list_evaluations(self, name: str, version: int | None = None) -> list[Evaluation]:
        params = _params(version=version)
        data = self._call("GET", ("models", name, "evaluations"), params=params)
        return [wire.evaluation_from_dict(e) for e in data["evaluations"]]

    # -- datasets with content ----------------------------------------------------------------

    def register_dataset(self, data: pd.DataFrame, name: str, source: str | None = None) -> str:
        """Send the frame as Parquet; returns the dataset's digest (as computed by the server)."""
        buf = io.BytesIO()
        data.to_parquet(buf, index=False)
        url = self._http.url("datasets")
        params = _params(name=name, source=source)
        response = self._http.call("POST", url, content=buf.getvalue(), params=params,
                                   headers=self._headers(_PARQUET))  # fmt: skip
        return str(response["digest"])

    def find_dataset(self, name_or_digest: str) -> dict[str, Any]:
        return self._call("GET", ("datasets", name_or_digest))  # type: ignore[no-any-return]

    def load_dataset(self, name_or_digest: str) -> pd.DataFrame:
        import pandas as pd

        row = self.find_dataset(name_or_digest)
        return pd.read_parquet(io.BytesIO(self.artifacts.get_bytes(row["content_digest"])))

    # -- audit (every change above is recorded by the server; record_event: deployments) ----

    def audit_events(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        target_type: str | None = None,
        target_id: str | None = None,
    ) -> list[AuditEvent]:
        params = _params(after_seq=after_seq, limit=limit, target_type=target_type,
                         target_id=target_id)  # fmt: skip
        data = self._call("GET", ("audit", "events"), params=params)
        return [wire.audit_event_from_dict(e) for e in data["events"]]

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        params = _params(anchor=wire.anchor_to_str(anchor) if anchor else None)
        return wire.verify_from_dict(self._call("GET", ("audit", "verify"), params=params))

    def record_event(
        self,
        action: str,
        target_type: str,
        target_id: str,
        *,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
    ) -> AuditEvent:
        """Record a deployment's state change; the server accepts only ``deployment.*``."""
        body = {"action": action, "target_type": target_type, "target_id": target_id,
                "before": before, "after": after, "reason": reason}  # fmt: skip
        return wire.audit_event_from_dict(self._call("POST", ("audit", "events"), body))

    # -- transport ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        segments: tuple[str, ...],
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One JSON request through the shared helper (retries and error translation there)."""
        url = self._http.url(*segments)
        if body is None:
            return self._http.call(method, url, params=params, headers=self._headers())
        return self._http.call(method, url, content=orjson.dumps(body), params=params,
                               headers=self._headers(_JSON))  # fmt: skip

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {USER_HEADER: self.user or current_actor(), **(extra or {})}


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the ``None`` ones (absent means "any")."""
    return {key: value for key, value in values.items() if value is not None}


def _tag(tag: tuple[str, str] | None) -> str | None:
    return None if tag is None else f"{tag[0]}:{tag[1]}"


def _policy_payload(policy: Any) -> dict[str, Any] | str:
    """A policy as JSON-ready data: YAML text and dicts travel as they are."""
    if isinstance(policy, str | dict):
        return policy
    if hasattr(policy, "model_dump"):
        return policy.model_dump(mode="json")  # type: ignore[no-any-return]
    raise InvalidInput("policy must be a GatePolicy, a dict or YAML text", field="policy")
