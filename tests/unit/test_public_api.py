"""The public surface changes only on purpose: this list is the contract."""

import loopwright

EXPECTED = {
    "ActiveRun", "AlreadyExists", "ApprovalRequired", "ArtifactRef", "Client", "Conflict",
    "DatasetInput",
    "Experiment", "GateFailed", "IntegrityError", "InvalidInput", "LoopwrightError",
    "MalformedFilter", "Metric", "NotFound", "Page", "PayloadTooLarge", "PermissionDenied", "Run",
    "RunStatus", "SchemaOutdated", "Settings", "StoreUnavailable", "Unauthenticated",
    "__version__", "active_run", "autolog", "end_run", "get_tracking_uri", "log_artifact",
    "log_dataset", "log_metric", "log_metrics", "log_param", "log_params", "set_tag", "set_tags",
    "set_tracking_uri", "start_run",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(loopwright.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(loopwright, name), name


def test_every_error_is_a_loopwright_error_with_an_http_status() -> None:
    from loopwright import errors

    for name in EXPECTED:
        obj = getattr(loopwright, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, loopwright.LoopwrightError)
            assert obj in errors.HTTP_STATUS
            assert errors.BY_CODE[obj.code] is obj


def test_importing_changes_no_global_state() -> None:
    import subprocess
    import sys

    code = (
        "import sys, atexit; hook = sys.excepthook; import loopwright; "
        "assert sys.excepthook is hook; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
