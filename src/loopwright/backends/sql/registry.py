"""The SQL implementation of :class:`~loopwright.registry.store.RegistryStore`.

It shares the engine and the connection helpers of :class:`SqlTrackingStore` (one database, one
transaction per change), and every change appends its audit event inside that transaction.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from loopwright.backends.sql import schema as t
from loopwright.backends.sql.audit import jsonable, read_events
from loopwright.backends.sql.store import SqlTrackingStore, now_ms
from loopwright.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from loopwright.governance.audit import AuditEvent, VerifyResult, verify
from loopwright.registry.entities import (
    ApprovalDecision,
    ApprovalRequest,
    Decision,
    Evaluation,
    ModelVersion,
    RegisteredModel,
    RequestStatus,
    alias_name,
    model_name,
)
from loopwright.tracking import validation as v

_VERIFY_PAGE = 5000


class SqlRegistryStore:
    """Registered models, versions, aliases, evaluations, approvals and the audit log."""

    def __init__(self, base: SqlTrackingStore) -> None:
        self.base = base
        self._read = base._read
        self._write = base._write
        self._audit = base.audit

    def close(self) -> None:
        self.base.close()

    # -- models -----------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        model_name(name)
        tags = v.string_map("tags", tags)
        created = now_ms()
        try:
            with self._write() as conn:
                conn.execute(
                    t.registered_models.insert().values(
                        name=name,
                        description=description or "",
                        created_at=created,
                        updated_at=created,
                        created_by=_actor(),
                        policy=None,
                    )
                )
                if tags:
                    conn.execute(
                        t.model_tags.insert(),
                        [{"model": name, "key": k, "value": x} for k, x in tags.items()],
                    )
                self._audit(
                    conn,
                    "model.create",
                    "model",
                    name,
                    after={"description": description, "tags": tags},
                )
        except SAIntegrityError:
            raise AlreadyExists(f"model {name!r} already exists", field="name") from None
        return self.get_model(name)

    def get_model(self, name: str) -> RegisteredModel:
        model_name(name)
        with self._read() as conn:
            models = self._models(conn, t.registered_models.c.name == name)
        if not models:
            raise NotFound(f"model {name!r} not found", field="model")
        return models[0]

    def search_models(
        self,
        name_like: str | None = None,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
    ) -> list[RegisteredModel]:
        m = t.registered_models
        conds: list[Any] = []
        if name_like:
            conds.append(m.c.name.like(name_like))
        if tag is not None:
            mt = t.model_tags
            conds.append(
                m.c.name.in_(select(mt.c.model).where(mt.c.key == tag[0], mt.c.value == tag[1]))
            )
        if alias is not None:
            ma = t.model_aliases
            conds.append(m.c.name.in_(select(ma.c.model).where(ma.c.alias == alias)))
        with self._read() as conn:
            return self._models(conn, *conds)

    def _models(self, conn: Connection, *where: Any) -> list[RegisteredModel]:
        m = t.registered_models
        rows = conn.execute(select(m).where(*where).order_by(m.c.name)).all()
        names = [r.name for r in rows]
        if not names:
            return []
        tags = _pairs(conn, t.model_tags, names)
        aliases: dict[str, dict[str, int]] = {}
        for r in conn.execute(select(t.model_aliases).where(t.model_aliases.c.model.in_(names))):
            aliases.setdefault(r.model, {})[r.alias] = r.version
        latest = dict(
            conn.execute(
                select(t.model_versions.c.model, func.max(t.model_versions.c.version))
                .where(t.model_versions.c.model.in_(names))
                .group_by(t.model_versions.c.model)
            ).all()
        )
        return [
            RegisteredModel(
                name=r.name,
                description=r.description,
                created_at=r.created_at,
                updated_at=r.updated_at,
                created_by=r.created_by,
                tags=tags.get(r.name, {}),
                aliases=aliases.get(r.name, {}),
                policy=r.policy,
                latest_version=latest.get(r.name),
            )
            for r in rows
        ]

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        policy: dict[str, Any] | None = None,
        clear_policy: bool = False,
        reason: str | None = None,
    ) -> RegisteredModel:
        current = self.get_model(name)
        values: dict[str, Any] = {"updated_at": now_ms()}
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        if description is not None:
            before["description"] = current.description
            values["description"] = after["description"] = description
        if policy is not None or clear_policy:
            before["policy"] = current.policy
            values["policy"] = after["policy"] = None if clear_policy else jsonable(policy)
        with self._write() as conn:
            conn.execute(
                update(t.registered_models)
                .where(t.registered_models.c.name == name)
                .values(**values)
            )
            self._audit(
                conn, "model.update", "model", name, before=before, after=after, reason=reason
            )
        return self.get_model(name)

    def set_model_tags(self, name: str, tags: dict[str, str]) -> RegisteredModel:
        current = self.get_model(name)
        tags = v.string_map("tags", tags)
        with self._write() as conn:
            self._put_tags(conn, t.model_tags, {"model": name}, tags)
            self._audit(
                conn,
                "model.tags",
                "model",
                name,
                before={k: current.tags.get(k) for k in tags},
                after=tags,
            )
        return self.get_model(name)

    def _put_tags(
        self, conn: Connection, table: Any, ident: dict[str, Any], tags: dict[str, str]
    ) -> None:
        keys = [table.c[k] == x for k, x in ident.items()]
        conn.execute(delete(table).where(*keys, table.c.key.in_(list(tags))))
        if tags:
            conn.execute(table.insert(), [{**ident, "key": k, "value": x} for k, x in tags.items()])

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
    ) -> ModelVersion:
        model_name(model)
        v.artifact_path("artifact_path", artifact_path)
        v.digest("digest", digest)
        v.key("flavor", flavor)
        tags = v.string_map("tags", tags)
        if run_id is not None:
            v.identifier("run_id", run_id)
        mv = t.model_versions
        with self._write() as conn:
            if (
                conn.scalar(
                    select(t.registered_models.c.name).where(t.registered_models.c.name == model)
                )
                is None
            ):
                raise NotFound(f"model {model!r} not found", field="model")
            if run_id is not None:
                self.base._require_run(conn, run_id)
            number = (
                conn.scalar(select(func.max(mv.c.version)).where(mv.c.model == model)) or 0
            ) + 1
            conn.execute(
                mv.insert().values(
                    model=model,
                    version=number,
                    run_id=run_id,
                    artifact_path=artifact_path,
                    digest=digest,
                    size=size,
                    flavor=flavor,
                    signature=signature,
                    metrics=jsonable(metrics),
                    description=description or "",
                    created_at=now_ms(),
                    created_by=_actor(),
                )
            )
            if tags:
                self._put_tags(conn, t.version_tags, {"model": model, "version": number}, tags)
            conn.execute(
                update(t.registered_models)
                .where(t.registered_models.c.name == model)
                .values(updated_at=now_ms())
            )
            self._audit(
                conn,
                "version.create",
                "model_version",
                f"{model}/{number}",
                after={
                    "run_id": run_id,
                    "digest": digest,
                    "flavor": flavor,
                    "artifact_path": artifact_path,
                },
            )
        return self.get_version(model, number)

    def get_version(self, model: str, version: int) -> ModelVersion:
        model_name(model)
        _version_number(version)
        with self._read() as conn:
            found = self._versions(
                conn, t.model_versions.c.model == model, t.model_versions.c.version == version
            )
        if not found:
            raise NotFound(f"model version {model}/{version} not found", field="version")
        return found[0]

    def search_versions(
        self,
        model: str | None = None,
        *,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
        run_id: str | None = None,
        digest: str | None = None,
        dataset_digest: str | None = None,
    ) -> list[ModelVersion]:
        mv = t.model_versions
        conds: list[Any] = []
        if model is not None:
            conds.append(mv.c.model == model)
        if run_id is not None:
            conds.append(mv.c.run_id == run_id)
        if digest is not None:
            conds.append(mv.c.digest == digest)
        if dataset_digest is not None:
            ri = t.run_inputs
            conds.append(mv.c.run_id.in_(select(ri.c.run_id).where(ri.c.digest == dataset_digest)))
        if tag is not None:
            vt = t.version_tags
            conds.append(
                mv.c.version.in_(
                    select(vt.c.version).where(
                        vt.c.model == mv.c.model, vt.c.key == tag[0], vt.c.value == tag[1]
                    )
                )
            )
        if alias is not None:
            ma = t.model_aliases
            conds.append(
                mv.c.version.in_(
                    select(ma.c.version).where(ma.c.model == mv.c.model, ma.c.alias == alias)
                )
            )
        with self._read() as conn:
            return self._versions(conn, *conds)

    def _versions(self, conn: Connection, *where: Any) -> list[ModelVersion]:
        mv = t.model_versions
        rows = conn.execute(select(mv).where(*where).order_by(mv.c.model, mv.c.version)).all()
        if not rows:
            return []
        models = sorted({r.model for r in rows})
        tags: dict[tuple[str, int], dict[str, str]] = {}
        vt = t.version_tags
        for r in conn.execute(select(vt).where(vt.c.model.in_(models))):
            tags.setdefault((r.model, r.version), {})[r.key] = r.value
        aliases: dict[tuple[str, int], list[str]] = {}
        ma = t.model_aliases
        for r in conn.execute(select(ma).where(ma.c.model.in_(models)).order_by(ma.c.alias)):
            aliases.setdefault((r.model, r.version), []).append(r.alias)
        return [
            ModelVersion(
                model=r.model,
                version=r.version,
                run_id=r.run_id,
                artifact_path=r.artifact_path,
                digest=r.digest,
                size=r.size,
                flavor=r.flavor,
                signature=r.signature,
                metrics={k: _float(x) for k, x in (r.metrics or {}).items()},
                description=r.description,
                created_at=r.created_at,
                created_by=r.created_by,
                tags=tags.get((r.model, r.version), {}),
                aliases=aliases.get((r.model, r.version), []),
            )
            for r in rows
        ]

    def set_version_tags(self, model: str, version: int, tags: dict[str, str]) -> ModelVersion:
        current = self.get_version(model, version)
        tags = v.string_map("tags", tags)
        with self._write() as conn:
            self._put_tags(conn, t.version_tags, {"model": model, "version": version}, tags)
            self._audit(
                conn,
                "version.tags",
                "model_version",
                f"{model}/{version}",
                before={k: current.tags.get(k) for k in tags},
                after=tags,
            )
        return self.get_version(model, version)

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
    ) -> ModelVersion:
        alias_name(alias)
        self.get_version(model, version)
        ma = t.model_aliases
        with self._write() as conn:
            before = conn.scalar(
                select(ma.c.version).where(ma.c.model == model, ma.c.alias == alias)
            )
            conn.execute(delete(ma).where(ma.c.model == model, ma.c.alias == alias))
            conn.execute(
                ma.insert().values(
                    model=model,
                    alias=alias,
                    version=version,
                    updated_at=now_ms(),
                    updated_by=_actor(),
                )
            )
            self._audit(
                conn,
                action,
                "alias",
                f"{model}@{alias}",
                before={"version": before},
                after={"version": version, **(extra or {})},
                reason=reason,
            )
        return self.get_version(model, version)

    def delete_alias(self, model: str, alias: str, *, reason: str | None = None) -> None:
        before = self.get_alias(model, alias)
        ma = t.model_aliases
        with self._write() as conn:
            conn.execute(delete(ma).where(ma.c.model == model, ma.c.alias == alias))
            self._audit(
                conn,
                "alias.delete",
                "alias",
                f"{model}@{alias}",
                before={"version": before},
                reason=reason,
            )

    def get_alias(self, model: str, alias: str) -> int:
        model_name(model)
        alias_name(alias)
        ma = t.model_aliases
        with self._read() as conn:
            version = conn.scalar(
                select(ma.c.version).where(ma.c.model == model, ma.c.alias == alias)
            )
        if version is None:
            self.get_model(model)  # NotFound for the model first
            raise NotFound(f"model {model!r} has no alias {alias!r}", field="alias")
        return int(version)

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
    ) -> Evaluation:
        self.get_version(model, version)
        ev = Evaluation(
            id=uuid.uuid4().hex,
            model=model,
            version=version,
            dataset_name=dataset_name,
            dataset_digest=dataset_digest,
            champion_version=champion_version,
            passed=bool(passed),
            report=jsonable(report),
            created_at=now_ms(),
            created_by=_actor(),
        )
        with self._write() as conn:
            conn.execute(
                t.evaluations.insert().values(
                    id=ev.id,
                    model=model,
                    version=version,
                    dataset_name=dataset_name,
                    dataset_digest=dataset_digest,
                    champion_version=champion_version,
                    passed=ev.passed,
                    report=ev.report,
                    created_at=ev.created_at,
                    created_by=ev.created_by,
                )
            )
            failed = [c.get("name") for c in report.get("checks", []) if not c.get("passed")]
            self._audit(
                conn,
                "gate.evaluate",
                "model_version",
                f"{model}/{version}",
                after={
                    "evaluation": ev.id,
                    "passed": ev.passed,
                    "dataset": dataset_name,
                    "failed_checks": failed,
                },
            )
        return ev

    def list_evaluations(self, model: str, version: int | None = None) -> list[Evaluation]:
        e = t.evaluations
        stmt = select(e).where(e.c.model == model)
        if version is not None:
            stmt = stmt.where(e.c.version == version)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(e.c.created_at, e.c.id)).all()
        return [Evaluation(**{**r._mapping, "passed": bool(r.passed)}) for r in rows]

    # -- approvals --------------------------------------------------------------------------

    def create_request(
        self, model: str, alias: str, version: int, *, required: int, comment: str
    ) -> ApprovalRequest:
        alias_name(alias)
        self.get_version(model, version)
        if not isinstance(required, int) or required < 0:
            raise InvalidInput("required must be an int >= 0", field="required")
        rid = uuid.uuid4().hex
        with self._write() as conn:
            conn.execute(
                t.approval_requests.insert().values(
                    id=rid,
                    model=model,
                    alias=alias,
                    version=version,
                    status=RequestStatus.PENDING.value,
                    required=required,
                    requested_by=_actor(),
                    requested_at=now_ms(),
                    comment=comment or "",
                )
            )
            self._audit(
                conn,
                "approval.request",
                "approval_request",
                rid,
                after={"model": model, "alias": alias, "version": version, "required": required},
                reason=comment,
            )
        return self.get_request(rid)

    def get_request(self, request_id: str) -> ApprovalRequest:
        v.identifier("request_id", request_id)
        found = self._requests(t.approval_requests.c.id == request_id)
        if not found:
            raise NotFound(f"approval request {request_id!r} not found", field="request_id")
        return found[0]

    def list_requests(
        self, model: str | None = None, status: RequestStatus | None = None
    ) -> list[ApprovalRequest]:
        ar = t.approval_requests
        conds = []
        if model is not None:
            conds.append(ar.c.model == model)
        if status is not None:
            conds.append(ar.c.status == RequestStatus(status).value)
        return self._requests(*conds)

    def _requests(self, *where: Any) -> list[ApprovalRequest]:
        ar, ad = t.approval_requests, t.approval_decisions
        with self._read() as conn:
            rows = conn.execute(select(ar).where(*where).order_by(ar.c.requested_at, ar.c.id)).all()
            ids = [r.id for r in rows]
            decisions: dict[str, list[ApprovalDecision]] = {}
            if ids:
                for d in conn.execute(
                    select(ad).where(ad.c.request_id.in_(ids)).order_by(ad.c.decided_at)
                ):
                    decisions.setdefault(d.request_id, []).append(
                        ApprovalDecision(d.approver, Decision(d.decision), d.comment, d.decided_at)
                    )
        return [
            ApprovalRequest(
                id=r.id,
                model=r.model,
                alias=r.alias,
                version=r.version,
                status=RequestStatus(r.status),
                required=r.required,
                requested_by=r.requested_by,
                requested_at=r.requested_at,
                comment=r.comment,
                decisions=decisions.get(r.id, []),
            )
            for r in rows
        ]

    def decide(self, request_id: str, decision: Decision, comment: str) -> ApprovalRequest:
        decision = Decision(decision)
        request = self.get_request(request_id)
        actor = _actor()
        if request.status is not RequestStatus.PENDING:
            raise Conflict(
                f"request {request_id} is {request.status.value}, not PENDING", field="request_id"
            )
        try:
            with self._write() as conn:
                conn.execute(
                    t.approval_decisions.insert().values(
                        request_id=request_id,
                        approver=actor,
                        decision=decision.value,
                        comment=comment or "",
                        decided_at=now_ms(),
                    )
                )
                status = _status_after(request, decision)
                if status is not request.status:
                    conn.execute(
                        update(t.approval_requests)
                        .where(t.approval_requests.c.id == request_id)
                        .values(status=status.value)
                    )
                self._audit(
                    conn,
                    f"approval.{decision.value.lower()}",
                    "approval_request",
                    request_id,
                    before={"status": request.status.value},
                    after={"status": status.value, "approver": actor},
                    reason=comment,
                )
        except SAIntegrityError:
            raise Conflict(
                f"{actor} already decided on request {request_id}", field="request_id"
            ) from None
        return self.get_request(request_id)

    def set_request_status(
        self, request_id: str, status: RequestStatus, *, reason: str | None = None
    ) -> ApprovalRequest:
        status = RequestStatus(status)
        before = self.get_request(request_id).status
        with self._write() as conn:
            conn.execute(
                update(t.approval_requests)
                .where(t.approval_requests.c.id == request_id)
                .values(status=status.value)
            )
            self._audit(
                conn,
                f"approval.{status.value.lower()}",
                "approval_request",
                request_id,
                before={"status": before.value},
                after={"status": status.value},
                reason=reason,
            )
        return self.get_request(request_id)

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
    ) -> AuditEvent:
        from loopwright.backends.sql.audit import append_event

        with self._write() as conn:
            return append_event(
                conn,
                self.base.dialect,
                action,
                target_type,
                target_id,
                before=before,
                after=after,
                reason=reason,
            )

    def audit_events(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        target_type: str | None = None,
        target_id: str | None = None,
    ) -> list[AuditEvent]:
        with self._read() as conn:
            return read_events(conn, after_seq, limit, target_type, target_id)

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        return verify(self._all_events(), anchor)

    def _all_events(self):  # type: ignore[no-untyped-def]
        after = 0
        while True:
            page = self.audit_events(after, _VERIFY_PAGE)
            yield from page
            if len(page) < _VERIFY_PAGE:
                return
            after = page[-1].seq

    # -- datasets with content ---------------------------------------------------------------

    def register_dataset(
        self,
        name: str,
        digest: str,
        schema: list[dict[str, str]],
        num_rows: int,
        content_digest: str,
        source: str | None = None,
    ) -> None:
        v.key("name", name)
        v.digest("digest", digest)
        v.digest("content_digest", content_digest)
        ds = t.datasets
        with self._write() as conn:
            exists = conn.scalar(select(ds.c.digest).where(ds.c.digest == digest))
            if exists:
                conn.execute(
                    update(ds)
                    .where(ds.c.digest == digest)
                    .values(name=name, content_digest=content_digest)
                )
            else:
                conn.execute(
                    ds.insert().values(
                        digest=digest,
                        name=name,
                        schema=schema,
                        num_rows=num_rows,
                        source=source,
                        created_at=now_ms(),
                        content_digest=content_digest,
                    )
                )
            self._audit(
                conn,
                "dataset.register",
                "dataset",
                digest,
                after={"name": name, "rows": num_rows, "content": content_digest},
            )

    def find_dataset(self, name_or_digest: str) -> dict[str, Any]:
        ds = t.datasets
        stmt = select(ds).where(ds.c.content_digest.is_not(None))
        stmt = stmt.where((ds.c.name == name_or_digest) | (ds.c.digest == name_or_digest))
        with self._read() as conn:
            row = conn.execute(stmt.order_by(ds.c.created_at.desc()).limit(1)).first()
        if row is None:
            raise NotFound(
                f"no dataset {name_or_digest!r} registered with its content", field="data"
            )
        return dict(row._mapping)


def _status_after(request: ApprovalRequest, decision: Decision) -> RequestStatus:
    if decision is Decision.REJECT:
        return RequestStatus.REJECTED
    return RequestStatus.APPROVED if request.approvals + 1 >= request.required else request.status


def _pairs(conn: Connection, table: Any, models: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in conn.execute(select(table).where(table.c.model.in_(models))):
        out.setdefault(r.model, {})[r.key] = r.value
    return out


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def _actor() -> str:
    from loopwright.governance.audit import current_actor

    return current_actor()


def _version_number(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"version must be an int >= 1, got {version!r}", field="version")
    return version
