"""The registry's rules: registering versions from runs, loading them safely, and moving aliases
only through passed gates and granted approvals.

The server runs this service (so the rules hold whatever the client); the embedded SDK runs it
in-process. Persistence is the :class:`~loopwright.registry.store.RegistryStore`'s job.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any

import orjson

from loopwright.errors import (
    ApprovalRequired,
    GateFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from loopwright.governance.audit import AuditEvent, VerifyResult, current_actor
from loopwright.registry.entities import (
    ApprovalRequest,
    Decision,
    Evaluation,
    ModelRef,
    ModelVersion,
    RegisteredModel,
    RequestStatus,
    alias_name,
)
from loopwright.registry.store import RegistryStore
from loopwright.tracking.store import ArtifactStore, TrackingStore

if TYPE_CHECKING:
    import pandas as pd

    from loopwright.governance.gates import GatePolicy
    from loopwright.monitoring.store import ReferenceProfileStore
    from loopwright.registry.model import LoadedModel

SIGNATURE_FILE = "signature.json"


def policy_digest(policy: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(policy, option=orjson.OPT_SORT_KEYS)).hexdigest()


class RegistryService:
    """Everything the registry does, over a registry store, the tracking store and the blobs."""

    def __init__(
        self,
        store: RegistryStore,
        tracking: TrackingStore,
        artifacts: ArtifactStore,
        *,
        profiles: ReferenceProfileStore | None = None,
    ) -> None:
        self.store = store
        self.tracking = tracking
        self.artifacts = artifacts
        self.profiles = profiles  # where reference profiles go (monitoring); None = not kept

    # -- models -----------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        return self.store.create_model(name, description, tags)

    def get_model(self, name: str) -> RegisteredModel:
        return self.store.get_model(name)

    def search_models(
        self,
        name_like: str | None = None,
        tag: tuple[str, str] | None = None,
        alias: str | None = None,
    ) -> list[RegisteredModel]:
        return self.store.search_models(name_like, tag, alias)

    def update_model(
        self, name: str, *, description: str | None = None, tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        if tags:
            self.store.set_model_tags(name, tags)
        if description is not None:
            return self.store.update_model(name, description=description)
        return self.store.get_model(name)

    def set_policy(
        self, name: str, policy: GatePolicy | dict[str, Any] | str | None, reason: str | None = None
    ) -> RegisteredModel:
        """Attach a gate policy (a ``GatePolicy``, a dict or YAML text); ``None`` removes it."""
        if policy is None:
            return self.store.update_model(name, clear_policy=True, reason=reason)
        return self.store.update_model(
            name, policy=_policy(policy).model_dump(mode="json"), reason=reason
        )

    def policy(self, name: str) -> GatePolicy | None:
        raw = self.store.get_model(name).policy
        return None if raw is None else _policy(raw)

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

        The version's reference profile (what monitoring compares live traffic with) is computed
        from ``reference_data``, else from the run's training dataset when it was registered
        with its content (:meth:`register_dataset`), else the version has none.
        """
        from loopwright.registry.flavors import FLAVORS

        run = self.tracking.get_run(run_id)
        refs = {r.path: r for r in self.tracking.list_artifacts(run_id, path.rstrip("/") + "/")}
        found = [
            (f, refs[f"{path}/{f.file_name}"])
            for f in FLAVORS.values()
            if f"{path}/{f.file_name}" in refs
        ]
        if not found:
            raise NotFound(
                f"run {run_id} has no model under {path!r} (log one with run.log_model)",
                field="path",
            )
        flavor, ref = found[0]
        signature = None
        if f"{path}/{SIGNATURE_FILE}" in refs:
            signature = orjson.loads(
                self.artifacts.get_bytes(refs[f"{path}/{SIGNATURE_FILE}"].digest)
            )
        profile = self._reference_profile(run, signature, reference_data)
        try:
            self.store.get_model(name)
        except NotFound:
            self.store.create_model(name)
        version = self.store.create_version(
            name,
            run_id=run_id,
            artifact_path=ref.path,
            digest=ref.digest,
            size=ref.size,
            flavor=flavor.name,
            signature=signature,
            metrics=dict(run.metrics),
            description=description,
            tags=tags,
        )
        if profile is not None and self.profiles is not None:
            self.profiles.put_reference_profile(
                name, version.version, profile[0], kind="features", source=profile[1]
            )
        return version

    def _reference_profile(
        self, run: Any, signature: dict[str, Any] | None, data: pd.DataFrame | None
    ) -> tuple[dict[str, Any], str] | None:
        """(profile dict, where it came from), computed before the version exists so a bad
        frame fails the registration instead of leaving a version without its profile."""
        if data is not None and self.profiles is None:
            raise InvalidInput(
                "reference_data needs a store that keeps reference profiles (an embedded "
                "SQLite/PostgreSQL store)",
                field="reference_data",
            )
        if self.profiles is None:
            return None
        source = "reference_data"
        if data is None:
            found = self._training_frame(run)
            if found is None:
                return None
            data, source = found
        from loopwright.monitoring.profiles import profile_frame

        inputs = [c["name"] for c in (signature or {}).get("inputs", [])]
        columns = [c for c in inputs if c in data.columns] or None
        return profile_frame(data, columns=columns).to_dict(), source

    def _training_frame(self, run: Any) -> tuple[pd.DataFrame, str] | None:
        """The run's first training input that was kept with its content, if any."""
        inputs = sorted(run.inputs, key=lambda d: d.context != "train")
        for dataset in inputs:
            try:
                return self.load_dataset(dataset.digest), f"dataset:{dataset.digest}"
            except NotFound:
                continue
        return None

    def resolve(self, uri: str | ModelRef) -> ModelVersion:
        """``churn/3``, ``churn/latest`` or ``churn@champion`` -> the version."""
        ref = uri if isinstance(uri, ModelRef) else ModelRef.parse(uri)
        if ref.version is not None:
            return self.store.get_version(ref.name, ref.version)
        if ref.alias == "latest":
            latest = self.store.get_model(ref.name).latest_version
            if latest is None:
                raise NotFound(f"model {ref.name!r} has no versions", field="uri")
            return self.store.get_version(ref.name, latest)
        assert ref.alias is not None
        return self.store.get_version(ref.name, self.store.get_alias(ref.name, ref.alias))

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self.store.get_version(name, version)

    def search_versions(self, name: str | None = None, **filters: Any) -> list[ModelVersion]:
        return self.store.search_versions(name, **filters)

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> ModelVersion:
        return self.store.set_version_tags(name, version, tags)

    def load(
        self, uri: str | ModelRef | ModelVersion, *, trusted: bool | list[str] = False
    ) -> LoadedModel:
        """Load a version for prediction; the bytes are verified against the version's digest."""
        from loopwright.registry.model import load_version

        mv = uri if isinstance(uri, ModelVersion) else self.resolve(uri)
        return load_version(mv, self.artifacts, trusted=trusted)

    # -- aliases, gates and approvals ---------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        reason: str | None = None,
        override: str | None = None,
    ) -> ModelVersion:
        """Move ``alias``; a protected alias needs passed gates and granted approvals.

        ``override`` is an admin's written justification for moving despite failed (or missing)
        gates; it is recorded in the audit trail. Approvals cannot be overridden.
        """
        alias_name(alias)
        policy = self.policy(name)
        self.store.get_version(name, version)
        if policy is None or alias not in policy.protected_aliases:
            return self.store.set_alias(name, alias, version, reason=reason)
        gate = self._gate_status(name, version, policy)
        extra: dict[str, Any] = {"evaluation": gate[1].id if gate[1] else None}
        if not gate[0]:
            if not override or not override.strip():
                raise gate[2]
            self.store.record(
                "gate.override",
                "model_version",
                f"{name}/{version}",
                after={"alias": alias, "failed": gate[2].message},
                reason=override,
            )
            extra["override"] = override
        request = self._granted_request(name, alias, version, policy.required_approvals)
        if request is not None:
            extra["approval_request"] = request.id
        moved = self.store.set_alias(
            name, alias, version, reason=reason or override, action="alias.promote", extra=extra
        )
        if request is not None:
            self.store.set_request_status(request.id, RequestStatus.APPLIED, reason=reason)
        return moved

    def _gate_status(
        self, name: str, version: int, policy: GatePolicy
    ) -> tuple[bool, Evaluation | None, GateFailed]:
        digest = policy_digest(policy.model_dump(mode="json"))
        evaluations = [
            e
            for e in self.store.list_evaluations(name, version)
            if e.report.get("policy_digest") == digest
        ]
        if not evaluations:
            return (
                False,
                None,
                GateFailed(
                    f"{name}/{version} has no evaluation under the current gate policy; run "
                    f"`loopwright models evaluate {name}/{version} --data {policy.dataset}`",
                    field="version",
                    failed_checks=[],
                ),
            )
        latest = evaluations[-1]
        if latest.passed:
            return True, latest, GateFailed("passed")
        from loopwright.governance.gates import EvaluationReport, gate_failed

        exc = gate_failed(EvaluationReport.from_dict(latest.report))
        exc.message = f"{name}/{version}: {exc.message}"
        exc.args = (exc.message,)
        return False, latest, exc

    def _granted_request(
        self, name: str, alias: str, version: int, required: int
    ) -> ApprovalRequest | None:
        if required <= 0:
            return None
        for request in reversed(self.store.list_requests(name, RequestStatus.APPROVED)):
            if request.alias == alias and request.version == version:
                return request
        pending = [
            r
            for r in self.store.list_requests(name, RequestStatus.PENDING)
            if r.alias == alias and r.version == version
        ]
        hint = (
            f"request {pending[-1].id} has {pending[-1].approvals} of {required}"
            if pending
            else f"request it with `loopwright models request {name} {alias} {version}`"
        )
        raise ApprovalRequired(
            f"moving {name}@{alias} to version {version} needs {required} approval(s) from "
            f"approvers other than the requester; {hint}",
            field="alias",
            required=required,
        )

    def delete_alias(self, name: str, alias: str, reason: str | None = None) -> None:
        policy = self.policy(name)
        if policy is not None and alias in policy.protected_aliases and not reason:
            raise InvalidInput(
                f"removing the protected alias {alias!r} needs a reason", field="reason"
            )
        self.store.delete_alias(name, alias, reason=reason)

    def request_alias(
        self, name: str, alias: str, version: int, comment: str = ""
    ) -> ApprovalRequest:
        policy = self.policy(name)
        required = policy.required_approvals if policy is not None else 1
        return self.store.create_request(name, alias, version, required=required, comment=comment)

    def decide(
        self, request_id: str, decision: Decision | str, comment: str = ""
    ) -> ApprovalRequest:
        """Approve or reject; nobody decides on their own request."""
        request = self.store.get_request(request_id)
        if request.requested_by == current_actor():
            raise PermissionDenied(
                f"{request.requested_by} requested this change and cannot approve or reject it",
                field="request_id",
            )
        return self.store.decide(request_id, Decision(decision), comment)

    def list_requests(
        self, name: str | None = None, status: RequestStatus | str | None = None
    ) -> list[ApprovalRequest]:
        return self.store.list_requests(name, RequestStatus(status) if status else None)

    def get_request(self, request_id: str) -> ApprovalRequest:
        return self.store.get_request(request_id)

    def cancel_request(self, request_id: str, reason: str = "") -> ApprovalRequest:
        request = self.store.get_request(request_id)
        if request.requested_by != current_actor():
            raise PermissionDenied("only the requester can cancel a request", field="request_id")
        return self.store.set_request_status(request_id, RequestStatus.CANCELLED, reason=reason)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, uri: str, data: pd.DataFrame | str | None = None) -> Evaluation:
        """Run the candidate (and the champion) on the policy's dataset; store the report."""
        from loopwright.governance.gates import evaluate
        from loopwright.registry.signature import Signature, compatibility

        candidate = self.resolve(uri)
        policy = self.policy(candidate.model)
        if policy is None:
            raise InvalidInput(
                f"model {candidate.model!r} has no gate policy; set one with "
                "`loopwright models policy set`",
                field="policy",
            )
        frame, dataset_name, dataset_digest = self._evaluation_data(data, policy.dataset)
        champion = self._champion(candidate)
        report = evaluate(
            policy,
            self.load(candidate),
            frame,
            champion=self.load(champion) if champion else None,
            candidate_size_bytes=candidate.size,
            candidate_signature=Signature.from_dict(candidate.signature)
            if candidate.signature
            else None,
            champion_signature=(
                Signature.from_dict(champion.signature) if champion and champion.signature else None
            ),
            compatibility=compatibility,
        ).to_dict()
        report["policy_digest"] = policy_digest(policy.model_dump(mode="json"))
        return self.store.add_evaluation(
            candidate.model,
            candidate.version,
            dataset_name=dataset_name,
            dataset_digest=dataset_digest,
            champion_version=champion.version if champion else None,
            passed=bool(report["passed"]),
            report=report,
        )

    def _champion(self, candidate: ModelVersion) -> ModelVersion | None:
        try:
            champion = self.resolve(ModelRef(candidate.model, alias="champion"))
        except NotFound:
            return None
        return None if champion.version == candidate.version else champion

    def _evaluation_data(self, data: Any, default_name: str) -> tuple[Any, str, str | None]:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            from loopwright.data.datasets import describe_dataset

            return data, default_name, describe_dataset(data, default_name).digest
        name = data if isinstance(data, str) and data else default_name
        return self.load_dataset(name), name, self.store.find_dataset(name)["digest"]

    def list_evaluations(self, name: str, version: int | None = None) -> list[Evaluation]:
        return self.store.list_evaluations(name, version)

    # -- audit --------------------------------------------------------------------------------

    def audit_events(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        target_type: str | None = None,
        target_id: str | None = None,
    ) -> list[AuditEvent]:
        return self.store.audit_events(after_seq, limit, target_type, target_id)

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        return self.store.verify_audit(anchor)

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
        """Chain a state change made outside the registry (a deployment's canary rolled back)
        into the same audit trail, attributed to :func:`current_actor`."""
        return self.store.record(
            action, target_type, target_id, before=before, after=after, reason=reason
        )

    # -- datasets with content ----------------------------------------------------------------

    def register_dataset(self, data: pd.DataFrame, name: str, source: str | None = None) -> str:
        """Keep a dataset's content (Parquet) so evaluations can name it; returns its digest."""
        from loopwright.data.datasets import describe_dataset

        ds = describe_dataset(data, name=name, context="evaluation", source=source)
        buf = io.BytesIO()
        data.to_parquet(buf, index=False)
        content = self.artifacts.put_bytes(buf.getvalue())
        self.store.register_dataset(name, ds.digest, ds.schema, ds.num_rows, content, source)
        return ds.digest

    def find_dataset(self, name_or_digest: str) -> dict[str, Any]:
        """The metadata of a dataset kept with its content (``content_digest`` names the blob)."""
        return self.store.find_dataset(name_or_digest)

    def load_dataset(self, name_or_digest: str) -> pd.DataFrame:
        import pandas as pd

        row = self.store.find_dataset(name_or_digest)
        return pd.read_parquet(io.BytesIO(self.artifacts.get_bytes(row["content_digest"])))


def _policy(policy: Any) -> GatePolicy:
    from loopwright.governance.gates import GatePolicy

    if isinstance(policy, GatePolicy):
        return policy
    if isinstance(policy, str):
        return GatePolicy.from_yaml(policy)
    if isinstance(policy, dict):
        return (
            GatePolicy.from_dict(policy)
            if hasattr(GatePolicy, "from_dict")
            else GatePolicy.model_validate(policy)
        )
    raise InvalidInput("policy must be a GatePolicy, a dict or YAML text", field="policy")
