"""loopwright: the operational layer that closes the loop of production machine learning.

The supported surface is what ``__all__`` lists; everything else is private and may change.
"""

from loopwright.client import Client
from loopwright.config import Settings
from loopwright.errors import (
    AlreadyExists,
    ApprovalRequired,
    Conflict,
    GateFailed,
    IntegrityError,
    InvalidInput,
    LoopwrightError,
    MalformedFilter,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SchemaOutdated,
    StoreUnavailable,
    Unauthenticated,
)
from loopwright.fluent import (
    end_run,
    get_tracking_uri,
    log_artifact,
    log_dataset,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    set_tag,
    set_tags,
    set_tracking_uri,
    start_run,
)
from loopwright.tracking.autolog import autolog
from loopwright.tracking.entities import (
    ArtifactRef,
    DatasetInput,
    Experiment,
    Metric,
    Page,
    Run,
    RunStatus,
)
from loopwright.tracking.run import ActiveRun, active_run

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "AlreadyExists",
    "ApprovalRequired",
    "ArtifactRef",
    "Client",
    "Conflict",
    "DatasetInput",
    "Experiment",
    "GateFailed",
    "IntegrityError",
    "InvalidInput",
    "LoopwrightError",
    "MalformedFilter",
    "Metric",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PermissionDenied",
    "Run",
    "RunStatus",
    "SchemaOutdated",
    "Settings",
    "StoreUnavailable",
    "Unauthenticated",
    "__version__",
    "active_run",
    "autolog",
    "end_run",
    "get_tracking_uri",
    "log_artifact",
    "log_dataset",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]
