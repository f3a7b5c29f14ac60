"""Experiments: create, list, get by id or by name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from loopwright.backends.rest import wire
from loopwright.server.auth import Permission, require
from loopwright.server.deps import Tracking
from loopwright.server.schemas import ExperimentCreate, ExperimentList, ExperimentPublic

router = APIRouter(tags=["experiments"])
READ = [require(Permission.READ)]
WRITE = [require(Permission.WRITE)]


@router.post("/experiments", status_code=201, response_model=ExperimentPublic, dependencies=WRITE)
def create_experiment(body: ExperimentCreate, tracking: Tracking) -> dict[str, Any]:
    return wire.experiment_to_dict(tracking.create_experiment(body.name, body.tags))


@router.get("/experiments", response_model=ExperimentList, dependencies=READ)
def list_experiments(tracking: Tracking) -> dict[str, Any]:
    return {"experiments": [wire.experiment_to_dict(e) for e in tracking.list_experiments()]}


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic, dependencies=READ)
def get_experiment(experiment_id: str, tracking: Tracking) -> dict[str, Any]:
    return wire.experiment_to_dict(tracking.get_experiment(experiment_id))


@router.get("/experiments-by-name/{name:path}", response_model=ExperimentPublic, dependencies=READ)
def get_experiment_by_name(name: str, tracking: Tracking) -> dict[str, Any]:
    """``:path`` because experiment names may contain ``/``."""
    return wire.experiment_to_dict(tracking.get_experiment_by_name(name))
