"""The `realtime_changes` sensor on a temporary instance, evaluated one tick at a time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dagster import DagsterInstance, Definitions, RunRequest, asset, build_sensor_context

from notion_sync.automation import realtime
from notion_sync.automation.jobs import sync_job
from notion_sync.config import ObjectConfig, RealtimeConfig, load_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.salesforce.resource import SalesforceResource

CONFIG = load_config()
ACCOUNT = CONFIG.objects["Account"]
POLLING = RealtimeConfig(change_events=False)
EVENTS = RealtimeConfig(listen_seconds=1.5)


def noop_assets(obj: ObjectConfig) -> list:
    """No-op assets with the project's keys: the sensor only needs the jobs to resolve."""
    partitions_def = daily_partitions(obj)

    @asset(key=["salesforce", obj.name], partitions_def=partitions_def)
    def extract() -> None: ...

    @asset(key=["notion", obj.name], partitions_def=partitions_def, deps=[extract])
    def sync() -> None: ...

    return [extract, sync]


class Ticker:
    """`realtime_changes` for `objects`; every tick happens `step_s` later on the sensor's clock (so
    polling intervals are up without waiting). `resources`: the real assets on the sandboxes, so
    that launched runs can be executed."""

    def __init__(
        self,
        instance: DagsterInstance,
        salesforce: SalesforceResource,
        *,
        objects: Sequence[ObjectConfig] = (ACCOUNT,),
        config: RealtimeConfig = EVENTS,
        resources: dict[str, Any] | None = None,
        step_s: float = 60.0,
    ) -> None:
        self.instance = instance
        self.salesforce = salesforce
        self.objects = list(objects)
        self.sensor = realtime.build_realtime_sensor(self.objects, config)
        self.now = time.time()
        self.step_s = step_s
        if resources:
            assets = [
                a for obj in objects for a in (build_salesforce_asset(obj), build_notion_asset(obj, []))
            ]
        else:
            assets = [a for obj in objects for a in noop_assets(obj)]
        self.defs = Definitions(
            assets=assets, jobs=[sync_job(obj) for obj in objects], sensors=[self.sensor], resources=resources
        )

    def __call__(self, cursor: str | None):
        self.now += self.step_s
        clock, realtime.clock = realtime.clock, lambda: self.now
        try:
            context = build_sensor_context(
                instance=self.instance,
                cursor=cursor,
                resources={"salesforce": self.salesforce},
                definitions=self.defs,
            )
            return self.sensor.evaluate_tick(context)
        finally:
            realtime.clock = clock

    def launch(self, result: Any) -> None:
        """Run what a tick requested, as the daemon would."""
        for request in result.run_requests:
            run_request: RunRequest = request
            job = self.defs.resolve_job_def(run_request.job_name or f"sync_{self.objects[0].name}")
            run = job.execute_in_process(
                instance=self.instance, partition_key=run_request.partition_key, tags=run_request.tags
            )
            assert run.success

    def some_id(self, offset: int = 0, obj: str = "Account") -> str:
        query = f"SELECT Id FROM {obj} ORDER BY Id LIMIT 1 OFFSET {offset}"
        return self.salesforce.get_client().sf.query(query)["records"][0]["Id"]
