"""Lineage: which code, environment and data produced a model version, and what used a dataset.

Everything here is built from the :class:`~loopwright.Client`'s public calls, so it works the same
embedded and against a server.
"""

from loopwright.lineage.graph import (
    DatasetConsumers,
    Edge,
    Graph,
    Node,
    NodeKind,
    Relation,
    dataset_consumers,
    render_tree,
    version_lineage,
    versions_trained_on,
)
from loopwright.lineage.openlineage import openlineage_events

__all__ = [
    "DatasetConsumers",
    "Edge",
    "Graph",
    "Node",
    "NodeKind",
    "Relation",
    "dataset_consumers",
    "openlineage_events",
    "render_tree",
    "version_lineage",
    "versions_trained_on",
]
