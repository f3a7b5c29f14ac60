"""The lineage graph: which code, environment and data produced a model version.

Built only from the :class:`~loopwright.Client`'s public calls (``registry.resolve``,
``tracking.get_run``, ``registry.list_evaluations``, ...), so the same function answers embedded
and against a server. Nodes are keyed ``"<kind>:<id>"``; an id is the thing's exact identity
(a dataset's content digest, a run id, a git commit, an environment digest), so two runs that
used the same data meet at one dataset node.

Edges point the way things flowed::

    dataset -used_by-> run        code -ran-> run          environment -hosted-> run
    run -produced-> model_version run -child_of-> run      evaluation -evaluates-> model_version
    dataset -used_by-> evaluation alias -points_to-> model_version

Deployments and predictions will join as further node kinds (``deployment -serves->``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopwright.tracking.entities import DatasetInput, Run, encode_float

if TYPE_CHECKING:
    from rich.text import Text
    from rich.tree import Tree

    from loopwright.client import Client
    from loopwright.registry.entities import Evaluation, ModelVersion

__all__ = [
    "DatasetConsumers",
    "Edge",
    "Graph",
    "Node",
    "NodeKind",
    "Relation",
    "dataset_consumers",
    "render_tree",
    "version_lineage",
    "versions_trained_on",
]

_PAGE = 1000


class NodeKind(enum.StrEnum):
    CODE = "code"
    ENVIRONMENT = "environment"
    DATASET = "dataset"
    RUN = "run"
    MODEL_VERSION = "model_version"
    EVALUATION = "evaluation"
    ALIAS = "alias"
    DEPLOYMENT = "deployment"
    PREDICTION = "prediction"


class Relation(enum.StrEnum):
    USED_BY = "used_by"
    RAN = "ran"
    HOSTED = "hosted"
    PRODUCED = "produced"
    CHILD_OF = "child_of"
    EVALUATES = "evaluates"
    POINTS_TO = "points_to"


#: Relations whose *target* is the upstream end (a child run points at its parent).
_TARGET_IS_UPSTREAM = frozenset({Relation.CHILD_OF})


@dataclass(frozen=True, slots=True)
class Node:
    kind: NodeKind
    id: str
    label: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # node key
    target: str  # node key
    relation: Relation
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Graph:
    """Nodes by key plus edges; adding a node twice merges what is known about it."""

    root: str | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        """Insert ``node``; when its key exists, fill in attributes the old node lacked."""
        old = self.nodes.get(node.key)
        if old is not None:
            merged = {
                **node.attributes,
                **{k: v for k, v in old.attributes.items() if v is not None},
            }
            node = Node(old.kind, old.id, old.label, merged)
        self.nodes[node.key] = node
        return node

    def link(self, source: Node, target: Node, relation: Relation, **attributes: Any) -> None:
        edge = Edge(source.key, target.key, relation, attributes)
        if edge not in self.edges:
            self.edges.append(edge)

    def get(self, kind: NodeKind | str, id: str) -> Node | None:
        return self.nodes.get(f"{kind}:{id}")

    def of_kind(self, kind: NodeKind | str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]

    def edges_into(self, key: str, relation: Relation | None = None) -> list[Edge]:
        return [e for e in self.edges if e.target == key and relation in (None, e.relation)]

    def edges_from(self, key: str, relation: Relation | None = None) -> list[Edge]:
        return [e for e in self.edges if e.source == key and relation in (None, e.relation)]

    def upstream(self, key: str) -> Iterator[tuple[Edge, Node]]:
        """What ``key`` came from, whichever way the edge is drawn."""
        for edge in self.edges:
            if edge.target == key and edge.relation not in _TARGET_IS_UPSTREAM:
                yield edge, self.nodes[edge.source]
            elif edge.source == key and edge.relation in _TARGET_IS_UPSTREAM:
                yield edge, self.nodes[edge.target]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite floats as strings, as everywhere in loopwright's wire format)."""
        return {
            "root": self.root,
            "nodes": [
                {
                    "key": n.key,
                    "kind": str(n.kind),
                    "id": n.id,
                    "label": n.label,
                    "attributes": _json_safe(n.attributes),
                }
                for n in self.nodes.values()
            ],
            "edges": [
                {
                    "from": e.source,
                    "to": e.target,
                    "relation": str(e.relation),
                    "attributes": _json_safe(e.attributes),
                }
                for e in self.edges
            ],
        }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return encode_float(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# -- nodes from entities -----------------------------------------------------------------------


def version_node(mv: ModelVersion) -> Node:
    attrs = {
        "model": mv.model,
        "version": mv.version,
        "digest": mv.digest,
        "size": mv.size,
        "flavor": mv.flavor,
        "artifact_path": mv.artifact_path,
        "run_id": mv.run_id,
        "description": mv.description,
        "created_at": mv.created_at,
        "created_by": mv.created_by,
        "metrics": dict(mv.metrics),
        "tags": dict(mv.tags),
        "aliases": list(mv.aliases),
        "signature": mv.signature,
    }
    return Node(NodeKind.MODEL_VERSION, mv.uri, f"{mv.uri} · {mv.flavor} · {mv.digest[:12]}", attrs)


def run_node(run: Run, experiment: str | None) -> Node:
    attrs = {
        "run_id": run.id,
        "name": run.name,
        "experiment_id": run.experiment_id,
        "experiment": experiment,
        "status": str(run.status),
        "start_time": run.start_time,
        "end_time": run.end_time,
        "user": run.user,
        "parent_run_id": run.parent_run_id,
        "error": run.error,
        "params": dict(run.params),
        "metrics": dict(run.metrics),
    }
    where = f" in {experiment}" if experiment else ""
    return Node(NodeKind.RUN, run.id, f"{run.name} ({run.id[:8]}){where} · {run.status}", attrs)


def dataset_node(ds: DatasetInput) -> Node:
    attrs = {
        "name": ds.name,
        "digest": ds.digest,
        "schema": [dict(f) for f in ds.schema],
        "num_rows": ds.num_rows,
        "source": ds.source,
    }
    label = f"{ds.name} · {ds.digest} · {ds.num_rows} rows, {len(ds.schema)} columns"
    return Node(NodeKind.DATASET, ds.digest, label, attrs)


def code_node(tags: dict[str, str]) -> Node | None:
    """The source revision from the run's ``lw.git.*`` tags; ``None`` outside a git work tree."""
    commit = tags.get("lw.git.commit")
    if not commit:
        return None
    dirty = tags.get("lw.git.dirty") == "true"
    diff = tags.get("lw.git.diff_digest")
    attrs = {
        "commit": commit,
        "branch": tags.get("lw.git.branch"),
        "dirty": dirty,
        "diff_digest": diff,
        "entry_point": tags.get("lw.entry_point"),
    }
    node_id = f"{commit}+{diff}" if dirty and diff else commit
    state = f"dirty, diff {diff[:12]}" if dirty and diff else ("dirty" if dirty else "clean")
    branch = f" on {attrs['branch']}" if attrs["branch"] else ""
    return Node(NodeKind.CODE, node_id, f"{commit}{branch} ({state})", attrs)


def environment_node(tags: dict[str, str]) -> Node | None:
    digest = tags.get("lw.env_digest")
    if not digest:
        return None
    attrs = {
        "digest": digest,
        "python": tags.get("lw.python"),
        "platform": tags.get("lw.platform"),
        "packages_digest": tags.get("lw.packages_digest"),
    }
    label = f"{digest[:12]} · Python {attrs['python'] or '?'} · {attrs['platform'] or '?'}"
    return Node(NodeKind.ENVIRONMENT, digest, label, attrs)


def evaluation_node(ev: Evaluation) -> Node:
    attrs = {
        "evaluation_id": ev.id,
        "passed": ev.passed,
        "dataset_name": ev.dataset_name,
        "dataset_digest": ev.dataset_digest,
        "champion_version": ev.champion_version,
        "created_at": ev.created_at,
        "created_by": ev.created_by,
        "checks": list(ev.report.get("checks", [])),
    }
    verdict = "passed" if ev.passed else "FAILED"
    return Node(NodeKind.EVALUATION, ev.id, f"{ev.id[:8]} {verdict} on {ev.dataset_name}", attrs)


def alias_node(model: str, alias: str) -> Node:
    return Node(NodeKind.ALIAS, f"{model}@{alias}", f"@{alias}", {"model": model, "alias": alias})


# -- queries -----------------------------------------------------------------------------------


def version_lineage(client: Client, uri: str) -> Graph:
    """Everything upstream of one version (``churn/3``, ``churn@champion``): the run that produced
    it and that run's parents, their data, code and environment, and the evaluations and aliases
    that refer to the version."""
    mv = client.registry.resolve(uri)
    graph = Graph()
    root = graph.add(version_node(mv))
    graph.root = root.key
    if mv.run_id:
        run = _add_run_chain(client, graph, mv.run_id)
        graph.link(run, root, Relation.PRODUCED, artifact_path=mv.artifact_path)
    for ev in client.registry.list_evaluations(mv.model, mv.version):
        _add_evaluation(graph, ev, root)
    for alias in mv.aliases:
        graph.link(graph.add(alias_node(mv.model, alias)), root, Relation.POINTS_TO)
    return graph


def _add_run_chain(client: Client, graph: Graph, run_id: str) -> Node:
    """The run and, through ``parent_run_id``, each ancestor (a loop in bad data stops the walk)."""
    experiments: dict[str, str | None] = {}
    first = child = _add_run(client, graph, client.get_run(run_id), experiments)
    parent_id = child.attributes["parent_run_id"]
    while parent_id and graph.get(NodeKind.RUN, parent_id) is None:
        parent = _add_run(client, graph, client.get_run(parent_id), experiments)
        graph.link(child, parent, Relation.CHILD_OF)
        child, parent_id = parent, parent.attributes["parent_run_id"]
    return first


def _add_run(client: Client, graph: Graph, run: Run, experiments: dict[str, str | None]) -> Node:
    if run.experiment_id not in experiments:
        experiments[run.experiment_id] = client.get_experiment(run.experiment_id).name
    node = graph.add(run_node(run, experiments[run.experiment_id]))
    for ds in run.inputs:
        graph.link(graph.add(dataset_node(ds)), node, Relation.USED_BY, context=ds.context)
    for upstream, relation in (
        (code_node(run.tags), Relation.RAN),
        (environment_node(run.tags), Relation.HOSTED),
    ):
        if upstream is not None:
            graph.link(graph.add(upstream), node, relation)
    return node


def _add_evaluation(graph: Graph, ev: Evaluation, root: Node) -> None:
    """The evaluation and the data it ran on (a training dataset node when the digests match)."""
    node = graph.add(evaluation_node(ev))
    graph.link(node, root, Relation.EVALUATES)
    if ev.dataset_digest:
        label = f"{ev.dataset_name} · {ev.dataset_digest}"
        attrs = {"name": ev.dataset_name, "digest": ev.dataset_digest}
        data = graph.get(NodeKind.DATASET, ev.dataset_digest) or graph.add(
            Node(NodeKind.DATASET, ev.dataset_digest, label, attrs)
        )
        graph.link(data, node, Relation.USED_BY, context="evaluation")


def versions_trained_on(client: Client, dataset_digest: str) -> list[ModelVersion]:
    """Every version whose run consumed this exact data (one indexed query in the registry)."""
    return client.registry.search_versions(dataset_digest=dataset_digest)


@dataclass(frozen=True, slots=True)
class DatasetConsumers:
    digest: str
    runs: list[Run]
    versions: list[ModelVersion]


def dataset_consumers(client: Client, digest: str) -> DatasetConsumers:
    """The runs that used this data and the versions they produced.

    Run search has no field for inputs yet, so the runs come from paging through all runs and
    keeping those that list the digest; the versions are one registry query.
    """
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.tracking.search_runs(None, None, None, _PAGE, token)
        runs += [r for r in page.items if any(ds.digest == digest for ds in r.inputs)]
        token = page.next_page_token
        if not token:
            break
    return DatasetConsumers(digest, runs, versions_trained_on(client, digest))


# -- rendering ---------------------------------------------------------------------------------

_STYLE = {
    NodeKind.MODEL_VERSION: "bold magenta",
    NodeKind.RUN: "cyan",
    NodeKind.DATASET: "green",
    NodeKind.CODE: "yellow",
    NodeKind.ENVIRONMENT: "blue",
    NodeKind.EVALUATION: "white",
    NodeKind.ALIAS: "bold",
    NodeKind.DEPLOYMENT: "magenta",
    NodeKind.PREDICTION: "dim",
}


def render_tree(graph: Graph) -> Tree:
    """The graph as a terminal tree from the root upstream; labels are plain text, not markup."""
    from rich.tree import Tree

    if graph.root is None:
        return Tree("(empty lineage)")
    tree = Tree(_label(graph.nodes[graph.root], None))
    _grow(graph, graph.root, tree, {graph.root})
    return tree


def _grow(graph: Graph, key: str, branch: Tree, seen: set[str]) -> None:
    for edge, node in sorted(graph.upstream(key), key=lambda en: _ORDER.index(en[1].kind)):
        child = branch.add(_label(node, edge))
        if node.key not in seen:  # a cycle in bad data is shown once, not followed
            _grow(graph, node.key, child, seen | {node.key})


_ORDER = [
    NodeKind.ALIAS,
    NodeKind.EVALUATION,
    NodeKind.RUN,
    NodeKind.DATASET,
    NodeKind.CODE,
    NodeKind.ENVIRONMENT,
    NodeKind.MODEL_VERSION,
    NodeKind.DEPLOYMENT,
    NodeKind.PREDICTION,
]


def _label(node: Node, edge: Edge | None) -> Text:
    from rich.text import Text

    text = Text()
    text.append(str(node.kind), style=_STYLE.get(node.kind, ""))
    text.append(f" {node.label}")
    if edge is not None:
        context = edge.attributes.get("context")
        text.append(f"  ({edge.relation}{f': {context}' if context else ''})", style="dim")
    return text
