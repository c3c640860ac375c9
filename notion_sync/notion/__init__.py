"""Notion side of the sync.

- `client.NotionClient`: the REST client (data-source API, retries, ambiguity-aware creates).
- `rate_limit`: the token bucket shared by every process using one token (SQLite or PostgreSQL),
  with a shared pause on 429 and an adaptive rate.
- `pipeline.run_pipelined`: a few requests in flight so latency does not cap throughput.
- `resource.NotionResource`: Dagster configuration and wiring from the environment.
"""
