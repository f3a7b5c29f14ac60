"""Export a version's lineage as OpenLineage run events (spec 2-0-2), so Marquez, DataHub or any
other OpenLineage consumer can show loopwright's runs next to the rest of a data platform.

One ``RunEvent`` per run in the version's lineage (ancestors first), written from the lineage
graph rather than fresh queries, so the export and ``loopwright lineage`` always agree:

- ``eventType`` from the run's status (RUNNING ``START``, FINISHED ``COMPLETE``, FAILED ``FAIL``,
  KILLED ``ABORT``), ``eventTime`` its end (or start, while running) in ISO-8601 UTC;
- ``run``: the run id as a UUID, facets ``nominalTime``, ``parent`` (nested runs),
  ``processing_engine`` (Python), ``errorMessage`` (failed runs) and ``loopwright_environment``
  (environment and uncommitted-diff digests, which no standard facet holds);
- ``job``: namespace ``loopwright``, name ``<experiment>/<run name>``, ``sourceCodeLocation`` from
  the ``lw.git.*`` tags and ``jobType``;
- ``inputs``: each dataset by name, with ``schema``, ``version`` (the content digest) and the
  ``inputStatistics`` row count; ``outputs``: the version as dataset ``models/<name>/<version>``
  whose ``version`` facet is the model file's digest.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loopwright.lineage.graph import Graph, Node, NodeKind, Relation, version_lineage

if TYPE_CHECKING:
    from loopwright.client import Client

__all__ = ["NAMESPACE", "PRODUCER", "SCHEMA_URL", "events_from_graph", "openlineage_events"]

PRODUCER = "https://github.com/loopwright/loopwright"
NAMESPACE = "loopwright"
SPEC = "https://openlineage.io/spec"
SCHEMA_URL = f"{SPEC}/2-0-2/OpenLineage.json#/$defs/RunEvent"
#: Where loopwright documents its own facet (OpenLineage asks custom facets to name a schema).
CUSTOM_FACET_URL = f"{PRODUCER}/blob/main/docs/lineage.md#openlineage"
_FACETS = {
    "nominalTime": "1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet",
    "parent": "1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
    "processing_engine": "1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "errorMessage": "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
    "sourceCodeLocation": "1-1-0/SourceCodeLocationJobFacet.json#/$defs/SourceCodeLocationJobFacet",
    "jobType": "2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "schema": "1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
    "version": "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
    "datasetType": "1-0-1/DatasetTypeDatasetFacet.json#/$defs/DatasetTypeDatasetFacet",
    "inputStatistics": "1-0-0/InputStatisticsInputDatasetFacet.json"
    "#/$defs/InputStatisticsInputDatasetFacet",
}
_EVENT_TYPE = {"RUNNING": "START", "FINISHED": "COMPLETE", "FAILED": "FAIL", "KILLED": "ABORT"}


def openlineage_events(
    client: Client, uri: str, *, repo_url: str | None = None
) -> list[dict[str, Any]]:
    """The run events of ``uri``'s lineage; ``repo_url`` (e.g. the GitHub URL) makes the
    ``sourceCodeLocation`` link browsable, since runs record the commit but not the remote."""
    return events_from_graph(version_lineage(client, uri), repo_url=repo_url)


def events_from_graph(graph: Graph, *, repo_url: str | None = None) -> list[dict[str, Any]]:
    runs = sorted(graph.of_kind(NodeKind.RUN), key=lambda n: (n.attributes["start_time"], n.id))
    return [_event(graph, run, repo_url) for run in runs]


def _event(graph: Graph, run: Node, repo_url: str | None) -> dict[str, Any]:
    a = run.attributes
    running = a["status"] == "RUNNING"
    return {
        "eventType": _EVENT_TYPE.get(a["status"], "OTHER"),
        "eventTime": _iso(a["start_time"] if running or a["end_time"] is None else a["end_time"]),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": {"runId": run_uuid(run.id), "facets": _run_facets(graph, run)},
        "job": {
            "namespace": NAMESPACE,
            "name": job_name(run),
            "facets": _job_facets(graph, run, repo_url),
        },
        "inputs": [
            _input(graph.nodes[e.source]) for e in graph.edges_into(run.key, Relation.USED_BY)
        ],
        "outputs": [
            _output(graph.nodes[e.target]) for e in graph.edges_from(run.key, Relation.PRODUCED)
        ],
    }


def run_uuid(run_id: str) -> str:
    """OpenLineage wants a UUID: loopwright's ids are 32 hex digits, i.e. one without dashes.
    Any other id maps to a stable name-based UUID, so repeated exports agree."""
    try:
        return str(uuid.UUID(hex=run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PRODUCER}/runs/{run_id}"))


def job_name(run: Node) -> str:
    experiment = run.attributes.get("experiment") or run.attributes["experiment_id"]
    return f"{experiment}/{run.attributes['name']}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _facet(facet: str, /, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{SPEC}/facets/{_FACETS[facet]}", **fields}


def _run_facets(graph: Graph, run: Node) -> dict[str, Any]:
    a = run.attributes
    nominal = {"nominalStartTime": _iso(a["start_time"])}
    if a["end_time"] is not None:
        nominal["nominalEndTime"] = _iso(a["end_time"])
    facets: dict[str, Any] = {"nominalTime": _facet("nominalTime", **nominal)}
    parents = graph.edges_from(run.key, Relation.CHILD_OF)
    if parents:
        parent = graph.nodes[parents[0].target]
        facets["parent"] = _facet(
            "parent",
            run={"runId": run_uuid(parent.id)},
            job={"namespace": NAMESPACE, "name": job_name(parent)},
        )
    env = _upstream(graph, run, Relation.HOSTED)
    code = _upstream(graph, run, Relation.RAN)
    if env is not None and env.attributes.get("python"):
        facets["processing_engine"] = _facet(
            "processing_engine", name="python", version=env.attributes["python"]
        )
    if a["status"] == "FAILED" and a.get("error"):
        facets["errorMessage"] = _facet(
            "errorMessage", message=a["error"], programmingLanguage="PYTHON"
        )
    if env is not None or code is not None:
        facets["loopwright_environment"] = _environment_facet(env, code)
    return facets


def _environment_facet(env: Node | None, code: Node | None) -> dict[str, Any]:
    """What no standard facet carries: the environment digests and the dirty-tree diff digest."""
    e = env.attributes if env is not None else {}
    c = code.attributes if code is not None else {}
    values = {
        "envDigest": e.get("digest"),
        "python": e.get("python"),
        "platform": e.get("platform"),
        "packagesDigest": e.get("packages_digest"),
        "gitDirty": c.get("dirty"),
        "gitDiffDigest": c.get("diff_digest"),
    }
    fields = {k: v for k, v in values.items() if v is not None}
    return {"_producer": PRODUCER, "_schemaURL": CUSTOM_FACET_URL, **fields}


def _upstream(graph: Graph, run: Node, relation: Relation) -> Node | None:
    edges = graph.edges_into(run.key, relation)
    return graph.nodes[edges[0].source] if edges else None


def _job_facets(graph: Graph, run: Node, repo_url: str | None) -> dict[str, Any]:
    facets: dict[str, Any] = {
        "jobType": _facet(
            "jobType", processingType="BATCH", integration="LOOPWRIGHT", jobType="TRAINING_RUN"
        ),
    }
    code = _upstream(graph, run, Relation.RAN)
    if code is not None:
        facets["sourceCodeLocation"] = _source_code(code, repo_url)
    return facets


def _source_code(code: Node, repo_url: str | None) -> dict[str, Any]:
    """``url`` is required: the commit on ``repo_url`` when known, else a ``urn:`` naming it."""
    commit = code.attributes["commit"]
    fields: dict[str, Any] = {"type": "git", "version": commit}
    if repo_url:
        fields["repoUrl"] = repo_url
        fields["url"] = f"{repo_url.rstrip('/').removesuffix('.git')}/tree/{commit}"
    else:
        fields["url"] = f"urn:git:commit:{commit}"
    entry = code.attributes.get("entry_point")
    if entry and not entry.startswith("-"):  # ``-c``: code typed on the command line, no file
        fields["path"] = entry
    if code.attributes.get("branch"):
        fields["branch"] = code.attributes["branch"]
    return _facet("sourceCodeLocation", **fields)


def _input(dataset: Node) -> dict[str, Any]:
    a = dataset.attributes
    facets: dict[str, Any] = {"version": _facet("version", datasetVersion=a["digest"])}
    if a.get("schema") is not None:
        fields = [{"name": f["name"], "type": f["type"]} for f in a["schema"]]
        facets["schema"] = _facet("schema", fields=fields)
    event: dict[str, Any] = {"namespace": NAMESPACE, "name": a["name"], "facets": facets}
    if a.get("num_rows") is not None:
        event["inputFacets"] = {
            "inputStatistics": _facet("inputStatistics", rowCount=a["num_rows"])
        }
    return event


def _output(version: Node) -> dict[str, Any]:
    a = version.attributes
    return {
        "namespace": NAMESPACE,
        "name": f"models/{a['model']}/{a['version']}",
        "facets": {
            "version": _facet("version", datasetVersion=a["digest"]),
            "datasetType": _facet("datasetType", datasetType="MODEL"),
        },
    }
