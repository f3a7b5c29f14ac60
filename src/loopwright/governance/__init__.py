"""Governance: gate policies and evaluation (gates, metrics, fairness), approvals, audit."""
