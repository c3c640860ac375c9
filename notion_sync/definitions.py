"""The one place where the sync config becomes Dagster definitions: assets, checks, resources,
jobs, sensors and schedules. `dagster dev -m notion_sync.definitions` and workspace.yaml load `defs`."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from notion_sync.automation.formulas import build_formula_check
from notion_sync.automation.jobs import build_jobs
from notion_sync.automation.reconcile import build_reconcile_check
from notion_sync.automation.schedules import build_schedules
from notion_sync.automation.sensors import build_sensors
from notion_sync.config import SyncConfig, load_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.checks import build_notion_checks
from notion_sync.resources import build_resources
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.salesforce.checks import build_salesforce_checks


def build_definitions(config: SyncConfig) -> Definitions:
    assets = []
    checks = []
    for obj in config.objects.values():
        assets += [build_salesforce_asset(obj), build_notion_asset(obj, config.parents_of(obj.name))]
        checks += [
            *build_salesforce_checks(obj),
            *build_notion_checks(obj),
            build_reconcile_check(obj),
            build_formula_check(obj),
        ]
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=build_jobs(config),
        sensors=build_sensors(config),
        schedules=build_schedules(config),
        resources=build_resources(),
        # One process per run, not per step: a run's steps go one after the other anyway (parents
        # first, pools), and each step process would cost seconds of start-up per partition.
        executor=in_process_executor,
    )


defs = build_definitions(load_config())
