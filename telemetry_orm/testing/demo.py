"""Kept for older imports: the demo lives in :mod:`telemetry_orm.demo`."""

from ..demo import DAYS, DEMO_PREFIX, MODELS, REPOS, fill

__all__ = ["DAYS", "DEMO_PREFIX", "MODELS", "REPOS", "fill"]
