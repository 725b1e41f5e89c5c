"""Say in the run's log what the frozen-prefix cache served, so a sweep's later runs show they reused the test set.

Attached to an evaluator, it logs one line per completed run (each validation round, the final evaluation):
``frozen-prefix cache: 0 from memory, 200 read from disk, 0 computed, on disk in runs/sweep/cache``.
"""

from __future__ import annotations

from ignite.engine import Engine, Events

from pipeline.models import FeatureCache


class CacheReport:
    def __init__(self, feature_cache: FeatureCache) -> None:
        self.cache = feature_cache

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.cache.enabled:
            engine.logger.info(self.cache.describe())
