"""Replay real Notion API recordings (VCR cassettes) against the sandbox and compare response shapes.

Each cassette in shared/fixtures/notion-recorded is replayed in order against a fresh sandbox:
recorded ids are mapped to the sandbox's ids as responses come back (the recordings' root page maps
to ``parent_page_id``), the request is sent with the recorded method, path, body and
Notion-Version, and the response is compared by *key structure* (recursively: the same keys in
objects, the same element structure in lists; values are ignored), plus status and error code.

Keys we deliberately do not serve: none. Where both sides hold an empty list (e.g. a search for
a page id, which matches no title) there is no element structure to compare.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from notion_sync.sandbox.notion_server import NotionSandbox

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "notion-recorded"
RECORDED_ROOT_PAGE = "393abc1e-edcd-80f3-813b-e205934558c6"  # the workspace page the recordings used
UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
CASSETTES = sorted(FIXTURES.glob("*.yaml")) if FIXTURES.is_dir() else []


def structure(value: Any) -> Any:
    """The key skeleton of a JSON value: dicts keep their keys, lists merge their elements."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for item in value:
            shape = structure(item)
            if not isinstance(shape, dict):
                return ["leaf"] if value else []
            merged.update(shape)
        return [merged] if value else []
    return "leaf"


def differences(recorded: Any, ours: Any, path: str = "$") -> list[str]:
    """Human-readable key-structure differences; empty lists and nulls match anything."""
    if recorded == "leaf" or ours == "leaf" or recorded == [] or ours == []:
        if isinstance(recorded, dict) != isinstance(ours, dict) and "leaf" not in (recorded, ours):
            return [f"{path}: object vs non-object"]
        return []
    if isinstance(recorded, list) and isinstance(ours, list):
        return differences(recorded[0], ours[0], f"{path}[]")
    if isinstance(recorded, dict) and isinstance(ours, dict):
        out = [f"{path}.{k}: recorded but not served" for k in recorded.keys() - ours.keys()]
        out += [f"{path}.{k}: served but not recorded" for k in ours.keys() - recorded.keys()]
        for key in recorded.keys() & ours.keys():
            out += differences(recorded[key], ours[key], f"{path}.{key}")
        return out
    return [f"{path}: {type(recorded).__name__} vs {type(ours).__name__}"]


def learn_ids(recorded: Any, ours: Any, ids: dict[str, str]) -> None:
    """Walk both responses in parallel and map every recorded id to the sandbox's id."""
    if isinstance(recorded, dict) and isinstance(ours, dict):
        for key in recorded.keys() & ours.keys():
            old, new = recorded[key], ours[key]
            if (key == "id" or key.endswith("_id")) and isinstance(old, str) and isinstance(new, str):
                if UUID.match(old) and UUID.match(new):
                    ids.setdefault(old.replace("-", ""), new)
            else:
                learn_ids(old, new, ids)
    elif isinstance(recorded, list) and isinstance(ours, list):
        for old, new in zip(recorded, ours, strict=False):
            learn_ids(old, new, ids)


def map_ids(text: str, ids: dict[str, str]) -> str:
    def swap(match: re.Match[str]) -> str:
        return ids.get(match.group(0).replace("-", ""), match.group(0))

    return re.sub(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", swap, text)


def interactions(cassette: Path) -> Iterator[tuple[dict, dict]]:
    for item in yaml.safe_load(cassette.read_text())["interactions"]:
        yield item["request"], item["response"]


@pytest.mark.skipif(not CASSETTES, reason=f"recorded Notion responses not found at {FIXTURES}")
@pytest.mark.parametrize("cassette", CASSETTES, ids=lambda p: p.stem)
def test_recorded_response_shapes(cassette: Path) -> None:
    problems: list[str] = []
    with NotionSandbox(rps=10_000, burst=10_000) as sandbox, requests.Session() as session:
        ids = {RECORDED_ROOT_PAGE.replace("-", ""): sandbox.parent_page_id}
        for n, (request, response) in enumerate(interactions(cassette)):
            expected_status = response["status"]["code"]
            headers = {
                "Authorization": f"Bearer {'ntn_wrong' if expected_status == 401 else sandbox.token}",
                "Content-Type": "application/json",
            }
            headers["Notion-Version"] = request["headers"]["notion-version"][0]
            path = re.sub(r"^https://api\.notion\.com", "", request["uri"])
            body = map_ids(request["body"] or "", ids)
            got = session.request(
                request["method"],
                sandbox.url + map_ids(path, ids),
                data=body.encode() or None,
                headers=headers,
                timeout=10,
            )
            recorded = json.loads(response["body"]["string"])
            ours = got.json()
            where = f"#{n} {request['method']} {path}"
            if got.status_code != expected_status or ours.get("code") != recorded.get("code"):
                problems.append(
                    f"{where}: got {got.status_code} {ours.get('code')}, "
                    f"recorded {expected_status} {recorded.get('code')}"
                )
                continue
            problems += [f"{where}: {d}" for d in differences(structure(recorded), structure(ours))]
            learn_ids(recorded, ours, ids)
    assert not problems, "\n".join(problems)


def test_structure_comparison_catches_missing_nested_keys() -> None:
    recorded = {"properties": {"Name": {"id": "title", "title": [{"plain_text": "x", "href": None}]}}}
    ours = {"properties": {"Name": {"id": "title", "title": [{"plain_text": "x"}]}}}
    assert differences(structure(recorded), structure(ours)) == [
        "$.properties.Name.title[].href: recorded but not served"
    ]
