"""Corral update service: bundle verification, rollout planning and the per-node update engine."""

__version__ = "0.1.0"
