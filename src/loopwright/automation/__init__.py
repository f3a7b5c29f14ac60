"""Automated retraining and champion/challenger promotion.

A :class:`RetrainPolicy` (YAML) says when a model is retrained (alerts, a cron schedule, enough
new labels, or a person's explicit trigger), on what data, and how the new version must prove
itself on live traffic; :class:`LoopController` runs it one :meth:`~LoopController.tick` at a
time, recording every step in the audit trail (``loopwright loop status <model>`` reads it back).
"""

from loopwright.automation.compare import Comparison
from loopwright.automation.controller import LoopController
from loopwright.automation.cron import CronSchedule
from loopwright.automation.data import TrainingData
from loopwright.automation.executors import LocalExecutor, RayExecutor, get_executor
from loopwright.automation.history import Cycle, LoopEvent, LoopHistory, describe
from loopwright.automation.policy import RetrainPolicy

__all__ = [
    "Comparison",
    "CronSchedule",
    "Cycle",
    "LocalExecutor",
    "LoopController",
    "LoopEvent",
    "LoopHistory",
    "RayExecutor",
    "RetrainPolicy",
    "TrainingData",
    "describe",
    "get_executor",
]
