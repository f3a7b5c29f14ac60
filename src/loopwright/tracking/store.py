"""The store interfaces experiment tracking needs.

Tracking owns these protocols; ``backends/sql`` (SQLite, PostgreSQL), ``backends/fs`` (artifact
bytes) and ``backends/rest`` (a loopwright server over HTTP) implement them. The SDK only ever talks
to these, which is why it behaves identically embedded and remote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from loopwright.tracking.entities import (
    ArtifactRef,
    DatasetInput,
    Experiment,
    Metric,
    Page,
    Run,
    RunStatus,
)


@runtime_checkable
class TrackingStore(Protocol):
    """Metadata of experiments and runs.

    Contract (checked by ``tests/contract``): every method validates its arguments and raises
    :class:`~loopwright.errors.InvalidInput` naming the field; unknown ids raise ``NotFound``;
    params are write-once (the same value again is accepted, a different one is a ``Conflict``);
    metric values keep NaN and +/-inf.
    """

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> Experiment: ...

    def get_experiment(self, experiment_id: str) -> Experiment: ...

    def get_experiment_by_name(self, name: str) -> Experiment: ...

    def list_experiments(self) -> list[Experiment]: ...

    def create_run(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run: ...

    def get_run(self, run_id: str) -> Run: ...

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        end_time: int | None = None,
        error: str | None = None,
    ) -> Run: ...

    def resume_run(self, run_id: str) -> Run:
        """Mark a run RUNNING again (after a crash, or to append to it)."""
        ...

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Append metrics, set params and tags in one transaction, and refresh the heartbeat.

        With ``idempotency_key``, a batch whose key was already applied is not applied again
        (what makes a batch safe to resend when its answer was lost).
        """
        ...

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]: ...

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page: ...

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None: ...

    def log_artifacts(self, run_id: str, refs: Sequence[ArtifactRef]) -> None: ...

    def list_artifacts(self, run_id: str, prefix: str = "") -> list[ArtifactRef]: ...

    def close(self) -> None: ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Content-addressed bytes: the key of a blob is the SHA-256 of its content.

    Writes are atomic (a reader never sees a partial blob), the same content is stored once, and
    every read verifies the digest (``IntegrityError`` when the bytes were altered).
    """

    def put_bytes(self, data: bytes) -> str: ...

    def put_file(self, path: str) -> tuple[str, int]:
        """Store a local file by streaming it; returns ``(digest, size)``."""
        ...

    def get_bytes(self, digest: str) -> bytes: ...

    def open(self, digest: str) -> BinaryIO:
        """A stream over the blob; the digest is verified when the stream is fully read."""
        ...

    def exists(self, digest: str) -> bool: ...

    def download(self, digest: str, dest: str) -> None:
        """Write the blob to ``dest`` atomically, verifying the digest."""
        ...


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk
