"""The prediction log and labels: round trips, partitioning, concurrency, crashes, retries."""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from loopwright.errors import InvalidInput
from loopwright.serving import predlog
from loopwright.serving.predictor import Rows
from loopwright.serving.predlog import (
    Answer,
    LabelStore,
    PredictionLog,
    join_labels,
    read_labels,
    read_predictions,
)

HOUR_MS = 3_600_000
T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z


def record(i: int, ts: int = T0, **overrides: object) -> dict:
    base = {
        "request_id": f"r{i}",
        "ts": ts,
        "route": "champion",
        "model": "churn",
        "version": 3,
        "inputs": {"age": 30 + i, "plan": "gold"},
        "prediction": 1,
        "probabilities": [0.25, 0.75],
        "latency_ms": 1.5,
        "error": None,
        "shadow": False,
    }
    return {**base, **overrides}


def parquet_files(root: Path) -> list[str]:
    return sorted(glob.glob(str(root / "predictions" / "**" / "*.parquet"), recursive=True))


def test_round_trip_with_mixed_types(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn-api")
    log.append(
        [
            record(0),
            record(1, prediction="yes", probabilities=None, inputs={"age": None, "plan": 2}),
            record(2, prediction=None, error="boom", shadow=True, version=4, inputs={"x": 1}),
            record(3, prediction=0.5, inputs={"age": 7.25, "plan": "basic"}),
        ]
    )
    assert log.pending == 4
    assert log.flush() == 4
    assert (log.written, log.pending, log.dropped) == (4, 0, 0)

    df = read_predictions(str(tmp_path)).sort_values("request_id").reset_index(drop=True)
    assert list(df["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert list(df["prediction"].fillna("<na>")) == ["1", "yes", "<na>", "0.5"]
    values = df["prediction_value"].tolist()
    assert values[0] == 1.0 and math.isnan(values[1]) and math.isnan(values[2])
    assert values[3] == 0.5
    assert list(df["probabilities"][0]) == [0.25, 0.75]
    assert df["probabilities"][1] is None
    assert df["ts"].iloc[0] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert list(df["shadow"]) == [False, False, True, False]
    assert list(df["version"]) == [3, 3, 4, 3]
    assert df["error"][2] == "boom"
    assert set(df["deployment"]) == {"churn-api"}
    # features: numeric -> float64, mixed -> string, missing -> null
    assert df["in_age"].dtype == "float64"
    assert df["in_age"][0] == 30.0 and df["in_age"][3] == 7.25
    assert list(df["in_plan"].fillna("<na>")) == ["gold", "2", "<na>", "basic"]
    assert df["in_x"][2] == 1.0
    assert json.loads(df["inputs_json"][0]) == {"age": 30, "plan": "gold"}


def test_one_file_per_hour_partition(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn-api")
    log.append([record(0, ts=T0 + 5), record(1, ts=T0 + HOUR_MS + 5), record(2, ts=T0 + 10)])
    assert log.flush() == 3
    files = parquet_files(tmp_path)
    assert len(files) == 2
    assert "deployment=churn-api/date=2024-05-01/hour=10/part-" in files[0]
    assert "deployment=churn-api/date=2024-05-01/hour=11/part-" in files[1]

    window = read_predictions(str(tmp_path), start_ms=T0 + HOUR_MS, end_ms=T0 + 2 * HOUR_MS)
    assert list(window["request_id"]) == ["r1"]
    assert read_predictions(str(tmp_path), deployment="other").empty
    assert len(read_predictions(str(tmp_path), deployment="churn-api")) == 3


def test_empty_reads_have_the_columns(tmp_path: Path) -> None:
    df = read_predictions(str(tmp_path))
    assert df.empty
    assert {"request_id", "ts", "prediction_value", "inputs_json", "deployment"} <= set(df.columns)
    labels = read_labels(str(tmp_path))
    assert labels.empty and list(labels.columns) == ["request_id", "label", "label_value", "ts"]
    assert PredictionLog(str(tmp_path), "d").flush() == 0


def test_concurrent_appends_while_flushing_lose_nothing(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn-api", flush_interval_s=0.005)
    log.start()
    threads, per_thread = 8, 250

    def worker(t: int) -> None:
        for i in range(per_thread):
            log.append([record(t * per_thread + i, ts=T0 + i)])
            if i == per_thread // 2:  # half way: let the flusher write while others append
                for _ in range(5000):
                    if log.written:
                        break
                    threading.Event().wait(0.001)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    log.close()

    df = read_predictions(str(tmp_path))
    assert (log.written, log.dropped, log.pending) == (threads * per_thread, 0, 0)
    assert len(df) == threads * per_thread
    assert df["request_id"].nunique() == threads * per_thread
    assert len(parquet_files(tmp_path)) > 1  # the flusher ran during the appends


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from loopwright.serving.predlog import PredictionLog

    uri, n = sys.argv[1], int(sys.argv[2])
    rec = lambda i: {"request_id": f"r{i}", "ts": 1714557600000 + i, "route": "champion",
                     "model": "m", "version": 1, "inputs": {"a": i}, "prediction": i,
                     "probabilities": None, "latency_ms": 1.0, "error": None, "shadow": False}
    log = PredictionLog(uri, "dep", flush_interval_s=0.001)
    log.append([rec(i) for i in range(n)])
    assert log.flush() == n
    print("flushed", flush=True)
    log.start()
    i = n
    while True:
        log.append([rec(j) for j in range(i, i + 50)])
        i += 50
        time.sleep(0.0005)
    """
)


def test_a_killed_writer_leaves_only_whole_files(tmp_path: Path) -> None:
    n = 500
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path), str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        # let the flusher write a few more files, then kill it mid-stream
        while len(parquet_files(tmp_path)) < 4 and proc.poll() is None:
            threading.Event().wait(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    partition = Path(parquet_files(tmp_path)[0]).parent
    (partition / ".part-123-deadbeef.parquet.tmp").write_bytes(b"PAR1\x00garbage")
    (partition / "_part-123-cafe.parquet").write_bytes(b"PAR1\x00garbage")

    df = read_predictions(str(tmp_path))
    ids = set(df["request_id"])
    assert {f"r{i}" for i in range(n)} <= ids
    assert len(df) == df["request_id"].nunique() >= n


def test_a_failed_flush_keeps_its_records_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(str(tmp_path), "churn-api")
    real = predlog._Dir.write_table
    calls = {"n": 0}

    def flaky(self: predlog._Dir, table: object, final: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        real(self, table, final)  # type: ignore[arg-type]

    monkeypatch.setattr(predlog._Dir, "write_table", flaky)
    log.append([record(0), record(1)])
    assert log.flush() == 0
    assert (log.pending, log.written) == (2, 0)
    assert log.last_error == "OSError: disk full"
    assert parquet_files(tmp_path) == []
    log.append([record(2)])
    assert log.flush() == 3
    assert sorted(read_predictions(str(tmp_path))["request_id"]) == ["r0", "r1", "r2"]


def test_buffer_is_bounded_and_drops_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(str(tmp_path), "churn-api", max_buffer=3)
    log.append([record(i) for i in range(5)])
    assert (log.pending, log.dropped) == (3, 2)

    def broken(self: object, table: object, final: str) -> None:
        raise OSError("unreachable")

    monkeypatch.setattr(predlog._Dir, "write_table", broken)
    assert log.flush() == 0
    log.append([record(5)])
    assert (log.pending, log.dropped) == (3, 3)
    monkeypatch.undo()
    log.close()
    assert sorted(read_predictions(str(tmp_path))["request_id"]) == ["r3", "r4", "r5"]


def test_close_flushes_and_context_manager(tmp_path: Path) -> None:
    with PredictionLog(str(tmp_path), "churn-api", flush_interval_s=60) as log:
        log.append([record(0)])
    assert log.written == 1 and log.pending == 0
    log.close()  # twice is fine
    assert len(read_predictions(str(tmp_path))) == 1


def test_labels_add_read_and_join_latest_wins(tmp_path: Path) -> None:
    uri = str(tmp_path)
    log = PredictionLog(uri, "churn-api")
    log.append([record(0), record(1), record(2)])
    log.flush()
    store = LabelStore(uri)
    first = [
        {"request_id": "r0", "label": 0, "ts": T0 + 1},
        {"request_id": "r1", "label": "churned", "ts": T0 + 2},
    ]
    assert store.add(first) == 2
    assert store.add([{"request_id": "r0", "label": 1, "ts": T0 + 5}]) == 1
    assert store.add([{"request_id": "r2", "label": True}]) == 1  # ts defaults to now
    assert store.add([]) == 0

    labels = read_labels(uri)
    assert len(labels) == 4
    assert glob.glob(str(tmp_path / "labels" / "date=2024-05-01" / "part-*.parquet"))

    joined = join_labels(read_predictions(uri), labels).set_index("request_id")
    assert joined.loc["r0", "label"] == "1" and joined.loc["r0", "label_value"] == 1.0
    assert joined.loc["r1", "label"] == "churned" and math.isnan(joined.loc["r1", "label_value"])
    assert joined.loc["r2", "label_value"] == 1.0
    assert joined.loc["r0", "label_ts"] == pd.Timestamp(T0 + 5, unit="ms", tz="UTC")

    unlabelled = join_labels(read_predictions(uri), labels.iloc[0:0])
    assert unlabelled["label"].isna().all()


def test_label_validation_names_the_field(tmp_path: Path) -> None:
    store = LabelStore(str(tmp_path))
    with pytest.raises(InvalidInput) as info:
        store.add([{"request_id": "r0", "label": 1}, {"label": 1}])
    assert info.value.field == "labels[1].request_id"
    with pytest.raises(InvalidInput) as info:
        store.add([{"request_id": "r0"}])
    assert info.value.field == "labels[0].label"
    with pytest.raises(InvalidInput) as info:
        store.add([{"request_id": "r0", "label": 1, "ts": "yesterday"}])
    assert info.value.field == "labels[0].ts"
    assert read_labels(str(tmp_path)).empty  # nothing written by a rejected batch


def test_memory_fsspec_url(tmp_path: Path) -> None:
    uri = f"memory://lw-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        log = PredictionLog(uri, "churn-api")
        log.append([record(0), record(1, ts=T0 + HOUR_MS)])
        assert log.flush() == 2
        LabelStore(uri).add([{"request_id": "r1", "label": 1, "ts": T0}])
        keys = fs.find(uri)
        assert len(keys) == 3 and not any("/." in k for k in keys)
        joined = join_labels(read_predictions(uri, deployment="churn-api"), read_labels(uri))
        assert sorted(joined["request_id"]) == ["r0", "r1"]
        assert joined.set_index("request_id").loc["r1", "label"] == "1"
        assert not os.listdir(tmp_path)
    finally:
        fs.rm(uri, recursive=True)


def test_unusual_deployment_names_round_trip(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn api=v2/eu")
    log.append([record(0)])
    log.flush()
    assert len(parquet_files(tmp_path)) == 1
    assert list(read_predictions(str(tmp_path), deployment="churn api=v2/eu")["request_id"]) == [
        "r0"
    ]
    with pytest.raises(InvalidInput):
        PredictionLog(str(tmp_path), "")


# -- answers: what the server appends, one per request ----------------------------------------

FEATURES = pd.Index(["f1", "f0"])


def answer(rid: str, values: list[list[float]], ts: int = T0, **overrides: object) -> Answer:
    n = len(values)
    fields: dict[str, object] = {
        "request_id": rid, "ts": ts, "route": "champion", "model": "churn", "version": 3,
        "latency_ms": 1.25, "error": None, "shadow": False,
        "inputs": Rows(np.array(values, dtype=np.float64), FEATURES),
        "predictions": [i % 2 for i in range(n)],
        "probabilities": [[0.5 + i / 10, 0.5 - i / 10] for i in range(n)],
    }  # fmt: skip
    return Answer(**{**fields, **overrides})  # type: ignore[arg-type]


def test_numeric_answers_are_written_column_by_column_with_the_record_paths_content(
    tmp_path: Path,
) -> None:
    answers = [
        answer("a", [[1.5, 2.0]]),
        answer("b", [[3.0, 4.0], [5.0, 6.0]], version=4, shadow=True, route="shadow"),
        answer("c", [[7.0, 8.0]], error="MODEL_ERROR: no", predictions=None, probabilities=None),
    ]
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    log = PredictionLog(str(fast), "churn-api")
    for a in answers:
        log.append_answer(a)
    assert log.pending == 4 and log.flush() == 4 and log.written == 4
    records = PredictionLog(str(slow), "churn-api")  # the same answers as plain records
    records.append([r for a in answers for r in a.records()])
    assert records.flush() == 4

    got = read_predictions(str(fast)).sort_values("request_id").reset_index(drop=True)
    want = read_predictions(str(slow)).sort_values("request_id").reset_index(drop=True)
    assert list(got["request_id"]) == ["a", "b/0", "b/1", "c"]  # one row per input row
    assert list(got["in_f0"]) == [2.0, 4.0, 6.0, 8.0] and list(got["in_f1"]) == [1.5, 3, 5, 7]
    assert got["inputs_json"].isna().all()  # numbers live in the in_ columns only
    assert want["inputs_json"].isna().all()  # (the record path writes no JSON for them either)
    pd.testing.assert_frame_equal(
        got.drop(columns=["inputs_json"]), want.drop(columns=["inputs_json"])
    )


def test_answers_over_frames_and_mixed_buffers_take_the_record_path(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn-api")
    frame = pd.DataFrame({"plan": ["gold"], "age": [30]})
    log.append_answer(answer("frame", [[0.0]], inputs=frame, probabilities=None))
    log.append_answer(answer("rows", [[1.0, 2.0]]))
    log.append([record(9)])
    assert log.flush() == 3
    df = read_predictions(str(tmp_path)).set_index("request_id")
    assert json.loads(df.loc["frame", "inputs_json"]) == {"plan": "gold", "age": 30}
    assert df.loc["frame", "in_plan"] == "gold" and df.loc["rows", "in_f1"] == 1.0
    assert pd.isna(df.loc["rows", "inputs_json"]) and df.loc["r9", "in_age"] == 39.0


def test_max_buffer_counts_rows_of_answers_and_keeps_the_newest(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "churn-api", max_buffer=4)
    log.append_answer(answer("old", [[1.0, 1.0], [2.0, 2.0]]))
    log.append_answer(answer("mid", [[3.0, 3.0]]))
    log.append_answer(answer("new", [[4.0, 4.0], [5.0, 5.0]]))
    assert (log.pending, log.dropped) == (3, 2)  # "old" went whole
    assert log.flush() == 3
    assert sorted(read_predictions(str(tmp_path))["request_id"]) == ["mid", "new/0", "new/1"]


DAY_MS = 24 * HOUR_MS


def test_reads_open_only_the_partitions_that_can_hold_the_rows(tmp_path: Path) -> None:
    """A day's read never opens another day's files: files planted in other partitions are
    unreadable, and only a read that reaches them fails."""
    log = PredictionLog(str(tmp_path), "churn-api")
    log.append([record(i, ts=T0 + i * DAY_MS) for i in range(3)])  # three days, one row each
    log.append([{**record(9, ts=T0), "request_id": "other"}])
    assert log.flush() == 4
    labels = LabelStore(str(tmp_path))
    labels.add([{"request_id": f"r{i}", "label": i, "ts": T0 + i * DAY_MS} for i in range(3)])
    for kind, partition in [
        ("predictions", "deployment=churn-api/date=2024-04-20/hour=10"),
        ("labels", "date=2024-04-20"),
    ]:  # garbage in an old partition, named like a real file
        bad = tmp_path / kind / partition
        bad.mkdir(parents=True)
        (bad / "part-1-bad.parquet").write_bytes(b"PAR1 not parquet at all PAR1")

    day1 = read_predictions(str(tmp_path), "churn-api", T0 + DAY_MS, T0 + 2 * DAY_MS)
    assert list(day1["request_id"]) == ["r1"]
    since = read_labels(str(tmp_path), since_ms=T0 + DAY_MS)
    assert sorted(since["request_id"]) == ["r1", "r2"]
    with pytest.raises(Exception):  # noqa: B017 -- reading everything meets the garbage
        read_predictions(str(tmp_path), "churn-api")
    with pytest.raises(Exception):  # noqa: B017
        read_labels(str(tmp_path))
