"""Jobs, sensors and schedules built from the sync config, and the alerts they raise.

How an object's `mode` maps to automation (the Apex sync modes):

- ``realtime``: a change sensor (`changes_<Object>`, :mod:`.changes`) polls Salesforce every
  `realtime.interval_seconds` for records modified since its cursor and launches the touched
  partitions in the high-priority ``realtime`` lane. A schedule may run as well, as a safety net.
- ``batch``: no automation of its own; partitions are materialized by backfills (UI, GraphQL or
  ``dagster asset materialize``), which run in the low-priority ``backfill`` lane.
- ``scheduled``: a schedule (`schedule_<Object>`, :mod:`.schedules`) on the object's cron
  materializes the latest partition.

Whatever the mode, the retry sensor (:mod:`.retry_sensor`) re-launches failed partitions with
backoff, the alert sensors (:mod:`.alerts`) report failures, and a weekly reconciliation job
(:mod:`.reconcile`) compares the Salesforce Ids with the Notion pages.
"""
