"""Domain entities of the model registry and its governance (evaluations, approvals)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from loopwright.errors import InvalidInput
from loopwright.tracking import validation as v


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"  # enough approvals; the alias may now move
    REJECTED = "REJECTED"
    APPLIED = "APPLIED"  # the alias moved under this request
    CANCELLED = "CANCELLED"


class Decision(enum.StrEnum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    description: str
    created_at: int
    updated_at: int
    created_by: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    latest_version: int | None = None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """An immutable version: the model file (by digest), how to load it, and where it came from."""

    model: str
    version: int
    run_id: str | None
    artifact_path: str
    digest: str
    size: int
    flavor: str
    signature: dict[str, Any] | None
    metrics: dict[str, float]
    description: str
    created_at: int
    created_by: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"{self.model}/{self.version}"


@dataclass(frozen=True, slots=True)
class Evaluation:
    id: str
    model: str
    version: int
    dataset_name: str
    dataset_digest: str | None
    champion_version: int | None
    passed: bool
    report: dict[str, Any]
    created_at: int
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    approver: str
    decision: Decision
    comment: str
    decided_at: int


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    model: str
    alias: str
    version: int
    status: RequestStatus
    required: int
    requested_by: str
    requested_at: int
    comment: str
    decisions: list[ApprovalDecision] = field(default_factory=list)

    @property
    def approvals(self) -> int:
        return sum(d.decision is Decision.APPROVE for d in self.decisions)


_URI = re.compile(r"^(?P<name>[^/@]+?)(?:/(?P<version>\d+|latest)|@(?P<alias>[^/@]+))$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``churn/3``, ``churn/latest`` or ``churn@champion`` (``models:/`` prefix accepted)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        if not isinstance(uri, str):
            raise InvalidInput(
                "model URI must be a string like churn/3 or churn@champion", field="uri"
            )
        m = _URI.match(uri.removeprefix("models:/"))
        if m is None:
            raise InvalidInput(
                f"model URI {uri!r} must look like NAME/VERSION, NAME/latest or NAME@ALIAS",
                field="uri",
            )
        version = m["version"]
        if version == "latest":
            return cls(m["name"], alias="latest")
        return cls(m["name"], int(version) if version else None, m["alias"])

    def __str__(self) -> str:
        return (
            f"{self.name}/{self.version}"
            if self.version is not None
            else f"{self.name}@{self.alias}"
        )


def model_name(name: Any) -> str:
    v.key("model", name)
    if "/" in name or "@" in name:
        raise InvalidInput(f"model name {name!r} cannot contain '/' or '@'", field="model")
    return name


def alias_name(alias: Any) -> str:
    v.key("alias", alias)
    if "/" in alias or "@" in alias or alias == "latest" or alias.isdigit():
        raise InvalidInput(
            f"alias {alias!r} must be a name (not 'latest', a number, '/' or '@')", field="alias"
        )
    return alias
