"""Jobs, sensors and schedules built from the sync config, and the alerts they raise.

How an object's `mode` maps to automation (the Apex sync modes):

- ``realtime``: the sensor `realtime_changes` (:mod:`.realtime`) takes each object's changes from
  Change Data Capture events (Pub/Sub API) or, for objects without them, polls Salesforce every
  `realtime.interval_seconds` (five objects to a Composite API call, :mod:`.changes`), and launches
  the touched partitions in the high-priority ``realtime`` lane. A schedule may run as well, as a
  safety net.
- ``batch``: no automation of its own; partitions are materialized by backfills (UI, GraphQL or
  ``dagster asset materialize``), which run in the low-priority ``backfill`` lane.
- ``scheduled``: a schedule (`schedule_<Object>`, :mod:`.schedules`) on the object's cron
  materializes every partition touched since its last successful tick (yesterday too after midnight).

Whatever the mode, the retry sensor `notion_sync_retry` (:mod:`.sensors`, rules in
:mod:`.retry_policy`) re-launches failed partitions, the alert sensors (:mod:`.alerts`) report
failures, and `reconcile_<Object>` (:mod:`.reconcile`, weekly) compares Salesforce Ids with Notion
pages. Sensors, and schedules with `enabled: true`, start in the RUNNING state.

Lanes (:mod:`.lanes`): runs carry `notion_sync/lane` and `dagster/priority`. The `sync_<Object>`
jobs default to the backfill lane (priority -1), so a backfill launched from a job's partitions
page is tagged without anyone thinking of it; sensors and schedules override the tags. An asset
backfill launched from the asset graph gets them from the launch dialog's tags (or none: the run
queue then still caps it through `dagster/backfill`, and its priority 0 stays below realtime's 10).
"""
