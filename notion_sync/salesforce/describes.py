"""Describe results kept an hour next to the staging file, one JSON file per object.

Every extraction needs the object's describe (fields and their types); fetching it costs one API call
per run, which for a backfill in ranges is a sixth of its calls and for the realtime lane's one-day
runs a third. Kept here, the runs of the next hour (of any process) reuse it. What that costs: a
field created in Salesforce reaches staging up to an hour later; a field deleted (or hidden) makes
the query fail with INVALID_FIELD, and the extraction then describes again at once (`stale`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simple_salesforce import Salesforce

DESCRIBE_TTL_S = 3_600.0


class DescribeCache:
    """``<staging file>.describe/<Object>.json``: the describe, when and from which org and API
    version it was fetched (another org or version is a miss)."""

    def __init__(self, staging_path: str | Path, ttl_s: float = DESCRIBE_TTL_S) -> None:
        staging = Path(staging_path)
        self.directory = staging.with_name(staging.name + ".describe")
        self.ttl_s = ttl_s

    def _file(self, object_name: str) -> Path:
        return self.directory / f"{object_name}.json"

    @staticmethod
    def _source(sf: Salesforce) -> dict[str, str]:
        return {"instance": sf.sf_instance, "version": sf.sf_version}

    def get(self, sf: Salesforce, object_name: str) -> Mapping[str, Any] | None:
        """The object's describe if fetched from this org less than the TTL ago."""
        try:
            entry = json.loads(self._file(object_name).read_text())
        except (OSError, ValueError):
            return None
        fresh = time.time() - entry.get("fetched_at", 0) < self.ttl_s
        return entry["describe"] if fresh and entry.get("source") == self._source(sf) else None

    def put(self, sf: Salesforce, object_name: str, describe: Mapping[str, Any]) -> None:
        """Store it (written to a temporary file and renamed: a reader never sees half of it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"fetched_at": time.time(), "source": self._source(sf), "describe": describe}
        partial = self.directory / f".{object_name}.{os.getpid()}.tmp"
        partial.write_text(json.dumps(entry))
        partial.replace(self._file(object_name))

    def stale(self, object_name: str) -> None:
        """Forget the object's describe (a query named a field Salesforce no longer has)."""
        self._file(object_name).unlink(missing_ok=True)
