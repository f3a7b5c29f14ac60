"""The store interface the registry needs (persistence only; rules live in :mod:`.service`).

Every state change a store makes appends an audit event in the same transaction, attributed to
:func:`loopwright.governance.audit.current_actor`, so the change and its record cannot part.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from loopwright.governance.audit import AuditEvent, VerifyResult
from loopwright.registry.entities import (
    ApprovalRequest,
    Decision,
    Evaluation,
    ModelVersion,
    RegisteredModel,
    RequestStatus,
)


@runtime_checkable
class RegistryStore(Protocol):
    # -- models -----------------------------------------------------------------------------
    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModel: ...

    def get_model(self, name: str) -> RegisteredModel: ...

    def search_models(
        self,
        name_like: str | None = None,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
    ) -> list[RegisteredModel]: ...

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        policy: dict[str, Any] | None = None,
        clear_policy: bool = False,
        reason: str | None = None,
    ) -> RegisteredModel: ...

    def set_model_tags(self, name: str, tags: dict[str, str]) -> RegisteredModel: ...

    # -- versions ---------------------------------------------------------------------------
    def create_version(
        self,
        model: str,
        *,
        run_id: str | None,
        artifact_path: str,
        digest: str,
        size: int,
        flavor: str,
        signature: dict[str, Any] | None,
        metrics: dict[str, float],
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> ModelVersion: ...

    def get_version(self, model: str, version: int) -> ModelVersion: ...

    def search_versions(
        self,
        model: str | None = None,
        *,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
        run_id: str | None = None,
        digest: str | None = None,
        dataset_digest: str | None = None,
    ) -> list[ModelVersion]: ...

    def set_version_tags(self, model: str, version: int, tags: dict[str, str]) -> ModelVersion: ...

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        reason: str | None = None,
        action: str = "alias.set",
        extra: dict[str, Any] | None = None,
    ) -> ModelVersion: ...

    def delete_alias(self, model: str, alias: str, *, reason: str | None = None) -> None: ...

    def get_alias(self, model: str, alias: str) -> int: ...

    # -- evaluations ------------------------------------------------------------------------
    def add_evaluation(
        self,
        model: str,
        version: int,
        *,
        dataset_name: str,
        dataset_digest: str | None,
        champion_version: int | None,
        passed: bool,
        report: dict[str, Any],
    ) -> Evaluation: ...

    def list_evaluations(self, model: str, version: int | None = None) -> list[Evaluation]: ...

    # -- approvals --------------------------------------------------------------------------
    def create_request(
        self, model: str, alias: str, version: int, *, required: int, comment: str
    ) -> ApprovalRequest: ...

    def get_request(self, request_id: str) -> ApprovalRequest: ...

    def list_requests(
        self, model: str | None = None, status: RequestStatus | None = None
    ) -> list[ApprovalRequest]: ...

    def decide(self, request_id: str, decision: Decision, comment: str) -> ApprovalRequest: ...

    def set_request_status(
        self, request_id: str, status: RequestStatus, *, reason: str | None = None
    ) -> ApprovalRequest: ...

    # -- audit ------------------------------------------------------------------------------
    def record(
        self,
        action: str,
        target_type: str,
        target_id: str,
        *,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
    ) -> AuditEvent: ...

    def audit_events(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        target_type: str | None = None,
        target_id: str | None = None,
    ) -> list[AuditEvent]: ...

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> VerifyResult: ...

    # -- datasets with content ---------------------------------------------------------------
    def register_dataset(
        self,
        name: str,
        digest: str,
        schema: list[dict[str, str]],
        num_rows: int,
        content_digest: str,
        source: str | None = None,
    ) -> None: ...

    def find_dataset(self, name_or_digest: str) -> dict[str, Any]:
        """The newest dataset registered with content under this name, or by digest."""
        ...
