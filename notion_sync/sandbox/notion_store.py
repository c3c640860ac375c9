"""In-memory data model of the sandbox Notion server: databases, data sources, pages.

Validation follows /work/shared/reference/notion-api.md §1 and §6 and answers with Notion's
error codes and message style. Every public ``Store`` method takes the store lock, so the HTTP
handler threads see a consistent model. Page property values are kept compact (tuples of text
segments, option ids, page ids) and expanded to Notion's JSON only when rendered, so 100,000
pages fit comfortably in memory. Text properties (title, rich_text) are indexed by plain text,
which makes the sync's upsert lookup (``rich_text equals <Salesforce Id>``) a dict hit.

Sandbox choice, not Notion behaviour: an ``email`` value without ``@`` is rejected with a 400
``validation_error`` (real Notion stores any string). Tests use it to make a record fail
permanently.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import random
import re
import string
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from notion_sync.sandbox.notion_limits import VirtualClock

V2025 = "2025-09-03"
V2026 = "2026-03-11"

TEXT_MAX = 2000
RICH_TEXT_ITEMS_MAX = 100
URL_MAX = 2000
EQUATION_MAX = 1000
EMAIL_PHONE_MAX = 200
ARRAY_MAX = 100
OPTION_NAME_MAX = 100
READ_CAP = 25  # references per relation/people property in page reads
PAGE_SIZE_MAX = 100
QUERY_RESULT_CAP = 10_000  # results of one data source query across its pagination (real Notion)
SEARCH_LAG_S = 60.0  # virtual seconds before a new data source shows up in search
INCOMPLETE = {"type": "incomplete", "incomplete_reason": "query_result_limit_reached"}

TEXT_TYPES = ("title", "rich_text", "url", "email", "phone_number")
READ_ONLY = (
    "formula",
    "rollup",
    "created_time",
    "created_by",
    "last_edited_time",
    "last_edited_by",
    "unique_id",
)
SCHEMA_TYPES = (
    "title",
    "rich_text",
    "number",
    "select",
    "multi_select",
    "status",
    "date",
    "checkbox",
    "url",
    "email",
    "phone_number",
    "relation",
    "people",
    "created_time",
    "created_by",
    "last_edited_time",
    "last_edited_by",
    "unique_id",
)
COLORS = ("default", "gray", "brown", "orange", "yellow", "green", "blue", "purple", "pink", "red")
ANNOTATIONS = {
    "bold": False,
    "italic": False,
    "strikethrough": False,
    "underline": False,
    "code": False,
    "color": "default",
}
BOT_USER_ID = "7775f3a3-893f-43fa-b625-460c61094c78"
# PATCH of a page in the trash (reported by integrations, e.g. dvanoni/notero).
ARCHIVED_MESSAGE = "Can't edit block that is archived. You must unarchive the block before editing."
# Notion documents a 403 for creates past the Free plan's block limit but we found no recorded body:
# code restricted_resource (Notion's code for a forbidden operation) and a message of our own.
BLOCK_LIMIT_MESSAGE = (
    "This workspace has reached its block limit: the Free plan allows 1,000 blocks in a workspace with "
    "more than one member. Upgrade the workspace's plan to create more."
)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


class NotionError(Exception):
    """An API error rendered as Notion's error envelope."""

    def __init__(self, status: int, code: str, message: str, additional_data: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.additional_data = additional_data


def invalid(message: str) -> NotionError:
    return NotionError(400, "validation_error", message)


def body_invalid(path: str, should: str, was: Any) -> NotionError:
    """``body failed validation: <path> should be <should>, instead was `<was>`.``"""
    shown = "undefined" if was is _MISSING else _js(was)
    return invalid(f"body failed validation: {path} should be {should}, instead was `{shown}`.")


def too_long(path: str, limit: int, actual: int) -> NotionError:
    return invalid(f"body failed validation: {path} should be ≤ `{limit}`, instead was `{actual}`.")


def not_found(kind: str, object_id: str) -> NotionError:
    return NotionError(
        404,
        "object_not_found",
        f"Could not find {kind} with ID: {object_id}. "
        "Make sure the relevant pages and databases are shared with your integration.",
    )


_MISSING = object()


def _js(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 60 else f'"{value[:57]}..."'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)[:60]


def parse_id(value: Any, path: str) -> str:
    """Accept a UUID with or without dashes; return it dashed and lower-case."""
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise invalid(
            f"{path.split('.')[0]} failed validation: {path} should be a valid uuid, "
            f"instead was `{_js(value)}`."
        )
    return str(uuid.UUID(value))


def new_id() -> str:
    return str(uuid.uuid4())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _minute(t: dt.datetime) -> dt.datetime:
    """Pages keep ``created_time`` and ``last_edited_time`` to the minute, in filters and sorts too."""
    return t.replace(second=0, microsecond=0)


def fmt_minute(t: dt.datetime) -> str:
    """Pages and data sources: time truncated to the minute (as in the recordings)."""
    return t.strftime("%Y-%m-%dT%H:%M:00.000Z")


def fmt_ms(t: dt.datetime) -> str:
    """Databases: millisecond precision with an explicit offset (as in the recordings)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+00:00"


def user(user_id: str = BOT_USER_ID) -> dict:
    return {"object": "user", "id": user_id}


# --------------------------------------------------------------------------------------------- rich text
# A segment is (type, text, link_url, annotations or None); type is "text" or "equation".
Segment = tuple[str, str, str | None, dict | None]


def parse_rich_text(value: Any, path: str) -> tuple[Segment, ...]:
    if not isinstance(value, list):
        raise body_invalid(path, "an array", value)
    if len(value) > RICH_TEXT_ITEMS_MAX:
        raise too_long(f"{path}.length", RICH_TEXT_ITEMS_MAX, len(value))
    segments = []
    for i, item in enumerate(value):
        ipath = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise body_invalid(ipath, "an object", item)
        annotations = item.get("annotations")
        if annotations is not None and not isinstance(annotations, dict):
            raise body_invalid(f"{ipath}.annotations", "an object", annotations)
        if "equation" in item:
            expr = (item["equation"] or {}).get("expression") if isinstance(item["equation"], dict) else None
            if not isinstance(expr, str):
                raise body_invalid(f"{ipath}.equation.expression", "a string", expr)
            if len(expr) > EQUATION_MAX:
                raise too_long(f"{ipath}.equation.expression.length", EQUATION_MAX, len(expr))
            segments.append(("equation", expr, None, annotations))
            continue
        text = item.get("text", _MISSING)
        if not isinstance(text, dict):
            raise body_invalid(f"{ipath}.text", "an object", text)
        content = text.get("content", _MISSING)
        if not isinstance(content, str):
            raise body_invalid(f"{ipath}.text.content", "a string", content)
        if len(content) > TEXT_MAX:
            raise too_long(f"{ipath}.text.content.length", TEXT_MAX, len(content))
        link = text.get("link")
        url = None
        if link is not None:
            url = link.get("url") if isinstance(link, dict) else None
            if not isinstance(url, str):
                raise body_invalid(f"{ipath}.text.link.url", "a string", url)
            if len(url) > URL_MAX:
                raise too_long(f"{ipath}.text.link.url.length", URL_MAX, len(url))
        segments.append(("text", content, url, annotations))
    return tuple(segments)


def render_rich_text(segments: tuple[Segment, ...]) -> list[dict]:
    out = []
    for kind, text, url, marks in segments:
        item: dict[str, Any] = {"type": kind}
        if kind == "equation":
            item["equation"] = {"expression": text}
        else:
            item["text"] = {"content": text, "link": {"url": url} if url else None}
        item["annotations"] = {**ANNOTATIONS, **marks} if marks else dict(ANNOTATIONS)
        item["plain_text"] = text
        item["href"] = url
        out.append(item)
    return out


def plain_text(segments: tuple[Segment, ...] | None) -> str:
    return "".join(s[1] for s in segments) if segments else ""


# --------------------------------------------------------------------------------------------- dates
def _parse_iso(value: Any, path: str) -> tuple[dt.datetime, bool, bool]:
    """Returns (datetime, date_only, has_offset)."""
    if not isinstance(value, str):
        raise body_invalid(path, "a valid ISO 8601 date string", value)
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC), True, False
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise body_invalid(path, "a valid ISO 8601 date string", value) from None
    return parsed, False, parsed.tzinfo is not None


def _as_utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def parse_date_value(value: Any, path: str) -> dict | None:
    """Validate a date value; a ``time_zone`` is folded into offsets (Notion returns time_zone null)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise body_invalid(path, "an object or `null`", value)
    tz_name = value.get("time_zone")
    zone = None
    if tz_name is not None:
        try:
            zone = zoneinfo.ZoneInfo(tz_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise body_invalid(f"{path}.time_zone", "a valid IANA time zone", tz_name) from None
    out: dict[str, Any] = {"start": None, "end": None, "time_zone": None}
    for key in ("start", "end"):
        raw = value.get(key)
        if raw is None:
            if key == "start":
                raise body_invalid(f"{path}.start", "defined", _MISSING)
            continue
        parsed, date_only, has_offset = _parse_iso(raw, f"{path}.{key}")
        if zone is not None:
            if date_only or has_offset:
                raise invalid(
                    f"body failed validation: {path}.{key} should be a datetime without a UTC offset when "
                    f"time_zone is provided, instead was `{_js(raw)}`."
                )
            out[key] = parsed.replace(tzinfo=zone).isoformat(timespec="milliseconds")
        else:
            out[key] = raw if date_only or not has_offset else parsed.isoformat(timespec="milliseconds")
    return out


def _date_key(value: str) -> dt.datetime:
    return _as_utc(_parse_iso(value, "date")[0])


# --------------------------------------------------------------------------------------------- schema
_PID_CHARS = string.ascii_letters + string.digits


@dataclass(slots=True)
class Prop:
    """One property of a data source schema."""

    id: str
    name: str
    type: str
    config: dict
    description: str | None = None

    def option_by(self, ref: dict) -> dict | None:
        for opt in self.config.get("options", []):
            if ("id" in ref and opt["id"] == ref["id"]) or ("name" in ref and opt["name"] == ref["name"]):
                return opt
        return None

    def render(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "type": self.type,
            self.type: _render_config(self),
        }


def _render_config(prop: Prop) -> dict:
    if prop.type in ("select", "multi_select"):
        return {"options": [dict(o) for o in prop.config["options"]]}
    if prop.type == "status":
        opts = [dict(o) for o in prop.config["options"]]
        group = {"id": prop.id + "-g", "name": "All", "color": "gray", "option_ids": [o["id"] for o in opts]}
        return {"options": opts, "groups": [group]}
    return dict(prop.config)


@dataclass(eq=False)
class Database:
    id: str
    parent_page_id: str
    title: tuple[Segment, ...]
    created: dt.datetime
    description: tuple[Segment, ...] = ()
    is_inline: bool = False
    in_trash: bool = False
    icon: dict | None = None
    cover: dict | None = None
    sources: list[DataSource] = field(default_factory=list)
    edited: dt.datetime = field(default_factory=_now)


@dataclass(eq=False)
class DataSource:
    id: str
    database: Database
    title: tuple[Segment, ...]
    created: dt.datetime
    props: dict[str, Prop] = field(default_factory=dict)  # by name, in creation order
    icon: dict | None = None
    in_trash: bool = False
    description: tuple[Segment, ...] = ()
    pages: list[Page] = field(default_factory=list)  # creation (seq) order
    index: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # prop id -> plain text -> pages
    edited: dt.datetime = field(default_factory=_now)
    born: float = 0.0  # virtual time of its creation (search lag)

    def prop(self, key: str) -> Prop | None:
        """Look a property up by name, then by id."""
        found = self.props.get(key)
        if found is None:
            found = self.prop_by_id(key)
        return found

    def prop_by_id(self, pid: str) -> Prop | None:
        return next((p for p in self.props.values() if p.id == pid), None)

    def title_prop(self) -> Prop:
        return next(p for p in self.props.values() if p.type == "title")


class Page:
    """A page; ``parent`` is a DataSource, a page id, or None for the workspace root."""

    __slots__ = (
        "born",
        "cover",
        "created",
        "edited",
        "icon",
        "id",
        "in_trash",
        "is_locked",
        "parent",
        "seq",
        "values",
    )

    def __init__(
        self, page_id: str, seq: int, parent: DataSource | str | None, created: dt.datetime | None = None
    ) -> None:
        self.id, self.seq, self.parent = page_id, seq, parent
        self.born = created or _now()  # the exact instant, for the query lag only
        self.created = self.edited = _minute(self.born)
        self.values: dict[str, Any] = {}
        self.in_trash = self.is_locked = False
        self.icon: dict | None = None
        self.cover: dict | None = None

    def title_text(self) -> str:
        pid = self.parent.title_prop().id if isinstance(self.parent, DataSource) else "title"
        return plain_text(self.values.get(pid))


def _slug_url(title: str, object_id: str) -> str:
    slug = "-".join(re.findall(r"[A-Za-z0-9]+", title))
    hex_id = object_id.replace("-", "")
    return f"https://app.notion.com/p/{slug}-{hex_id}" if slug else f"https://app.notion.com/p/{hex_id}"


# --------------------------------------------------------------------------------------------- store
def _mutates(method: Callable[..., Any]) -> Callable[..., Any]:
    """A write: taken under the store lock, and it drops the cached query results."""

    @functools.wraps(method)
    def write(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self._query_cache.clear()
            return method(self, *args, **kwargs)

    return write


class Store:
    """The sandbox workspace. All public methods are thread-safe (one re-entrant lock).

    ``clock`` is the server's virtual clock (search lag). Real Notion behaviours modelled here, on
    by default: a query returns at most ``query_result_cap`` results across its pagination (then
    ``request_status`` says ``incomplete``); page timestamps are kept to the minute; search finds a
    new data source only ``search_lag_s`` virtual seconds after its creation, while a page's
    children (``GET /v1/blocks/{id}/children``) list a new database at once; a page in the trash
    refuses edits and a second trashing (400 "Can't edit block that is archived"). Set by a test:
    ``block_limit`` (the Free plan's 1,000 blocks), past which creates answer 403.
    """

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or VirtualClock()
        self.pages: dict[str, Page] = {}
        self.databases: dict[str, Database] = {}
        self.sources: dict[str, DataSource] = {}
        self._children: dict[str, list[str]] = {}  # page id -> child page and database ids, in order
        self._seq = 0
        # Real seconds before a new page shows up in data source queries (an index lag, for tests of
        # lookups right after a create; 0 = at once).
        self.query_lag_s = 0.0
        # The Free plan's lifetime block limit of a workspace with several members (1,000; every page
        # and database is a block); past it creates answer 403. None: a paid plan, no limit.
        self.block_limit: int | None = None
        self.query_result_cap = QUERY_RESULT_CAP
        self.search_lag_s = SEARCH_LAG_S
        # data source id -> (filter and sorts, matching pages in order, position of each page id)
        self._query_cache: dict[str, tuple[str, list[Page], dict[str, int]]] = {}
        root = self._new_page(None)
        root.values["title"] = (("text", "Sandbox root", None, None),)
        self.root_page_id = root.id

    # ----------------------------------------------------------------------------- helpers
    def _new_page(self, parent: DataSource | str | None, created: dt.datetime | None = None) -> Page:
        self._seq += 1
        page = Page(new_id(), self._seq, parent, created)
        self.pages[page.id] = page
        if isinstance(parent, DataSource):
            parent.pages.append(page)
        elif parent is not None:
            self._children.setdefault(parent, []).append(page.id)
        return page

    def _check_block_limit(self) -> None:
        """Creates past the workspace's block limit (its grace period over) are refused."""
        if self.block_limit is not None and len(self.pages) + len(self.databases) >= self.block_limit:
            raise NotionError(403, "restricted_resource", BLOCK_LIMIT_MESSAGE)

    def _new_source(
        self, database: Database, title: tuple[Segment, ...], icon: dict | None = None
    ) -> DataSource:
        source = DataSource(new_id(), database, title, _now(), icon=icon)
        source.born = self.clock.now()
        return source

    @staticmethod
    def _lookup(objects: dict[str, Any], object_id: Any, kind: str, path: str) -> Any:
        oid = parse_id(object_id, path)
        found = objects.get(oid)
        if found is None:
            raise not_found(kind, oid)
        return found

    def _page(self, page_id: Any, path: str = "path.page_id") -> Page:
        return self._lookup(self.pages, page_id, "page", path)

    def _database(self, database_id: Any, path: str = "path.database_id") -> Database:
        return self._lookup(self.databases, database_id, "database", path)

    def _source(self, source_id: Any, path: str = "path.data_source_id") -> DataSource:
        return self._lookup(self.sources, source_id, "data source", path)

    @staticmethod
    def _check_archived(body: dict, version: str) -> None:
        if "archived" in body and version != V2025:
            raise invalid(
                "body failed validation: body.archived should be not present, instead was "
                f"`{_js(body['archived'])}`. Use `in_trash` instead (Notion-Version {version})."
            )

    @staticmethod
    def _trash_flag(body: dict) -> bool | None:
        for key in ("in_trash", "archived"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise body_invalid(f"body.{key}", "a boolean", body[key])
                return body[key]
        return None

    # ----------------------------------------------------------------------------- rendering
    @staticmethod
    def _with_archived(obj: dict, in_trash: bool, version: str) -> dict:
        if version == V2025:
            obj["archived"] = in_trash
        return obj

    def render_page(self, page: Page, version: str, only: set[str] | None = None) -> dict:
        parent = page.parent
        if isinstance(parent, DataSource):
            parent_obj = {
                "type": "data_source_id",
                "data_source_id": parent.id,
                "database_id": parent.database.id,
            }
            schema = [p for p in parent.props.values() if only is None or p.id in only or p.name in only]
            props = {p.name: self._render_value(page, p) for p in schema}
        else:
            parent_obj = (
                {"type": "page_id", "page_id": parent} if parent else {"type": "workspace", "workspace": True}
            )
            props = {
                "title": {
                    "id": "title",
                    "type": "title",
                    "title": render_rich_text(page.values.get("title", ())),
                }
            }
        obj = {
            "object": "page",
            "id": page.id,
            "created_time": fmt_minute(page.created),
            "last_edited_time": fmt_minute(page.edited),
            "created_by": user(),
            "last_edited_by": user(),
            "cover": page.cover,
            "icon": page.icon,
            "parent": parent_obj,
            "in_trash": page.in_trash,
            "is_archived": False,
            "is_locked": page.is_locked,
            "properties": props,
            "url": _slug_url(page.title_text(), page.id),
            "public_url": None,
        }
        return self._with_archived(obj, page.in_trash, version)

    def _render_value(self, page: Page, prop: Prop) -> dict:
        raw = page.values.get(prop.id)
        kind = prop.type
        out: dict[str, Any] = {"id": prop.id, "type": kind}
        if kind in ("title", "rich_text"):
            out[kind] = render_rich_text(raw or ())
        elif kind in ("select", "status"):
            opt = prop.option_by({"id": raw}) if raw else None
            out[kind] = {k: opt[k] for k in ("id", "name", "color")} if opt else None
        elif kind == "multi_select":
            opts = [prop.option_by({"id": oid}) for oid in raw or ()]
            out[kind] = [{k: o[k] for k in ("id", "name", "color")} for o in opts if o]
        elif kind == "relation":
            ids = raw or ()
            out[kind] = [{"id": i} for i in ids[:READ_CAP]]
            out["has_more"] = len(ids) > READ_CAP
        elif kind == "people":
            out[kind] = [user(i) for i in (raw or ())[:READ_CAP]]
        elif kind == "checkbox":
            out[kind] = bool(raw)
        elif kind == "created_time":
            out[kind] = fmt_minute(page.created)
        elif kind == "last_edited_time":
            out[kind] = fmt_minute(page.edited)
        elif kind in ("created_by", "last_edited_by"):
            out[kind] = user()
        elif kind == "unique_id":
            out[kind] = {"prefix": prop.config.get("prefix"), "number": page.seq}
        else:  # number, date, url, email, phone_number
            out[kind] = raw
        return out

    def render_database(self, db: Database, version: str) -> dict:
        obj = {
            "object": "database",
            "id": db.id,
            "title": render_rich_text(db.title),
            "description": render_rich_text(db.description),
            "parent": {"type": "page_id", "page_id": db.parent_page_id},
            "is_inline": db.is_inline,
            "in_trash": db.in_trash,
            "is_locked": False,
            "created_time": fmt_ms(db.created),
            "last_edited_time": fmt_ms(db.edited),
            "data_sources": [{"id": s.id, "name": plain_text(s.title)} for s in db.sources],
            "icon": db.icon,
            "cover": db.cover,
            "url": _slug_url("", db.id),
            "public_url": None,
        }
        return self._with_archived(obj, db.in_trash, version)

    def render_source(self, source: DataSource, version: str) -> dict:
        db = source.database
        obj = {
            "object": "data_source",
            "id": source.id,
            "cover": None,
            "icon": source.icon,
            "created_time": fmt_minute(source.created),
            "created_by": user(),
            "last_edited_by": user(),
            "last_edited_time": fmt_minute(source.edited),
            "title": render_rich_text(source.title),
            "description": render_rich_text(source.description),
            "is_inline": db.is_inline,
            "properties": {p.name: p.render() for p in source.props.values()},
            "parent": {"type": "database_id", "database_id": db.id},
            "database_parent": {"type": "page_id", "page_id": db.parent_page_id},
            "url": _slug_url("", db.id),
            "public_url": None,
            "in_trash": source.in_trash,
        }
        return self._with_archived(obj, source.in_trash, version)

    # ----------------------------------------------------------------------------- schema parsing
    def _parse_prop(
        self, source: DataSource | None, name: str, spec: Any, path: str, existing: Prop | None = None
    ) -> Prop:
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        kinds = [k for k in spec if k in SCHEMA_TYPES or k in ("formula", "rollup", "files", "button")]
        if not kinds and existing is not None:
            return existing
        if len(kinds) != 1:
            raise invalid(
                f"body failed validation: {path} should define exactly one property type "
                f"({', '.join(SCHEMA_TYPES)})."
            )
        kind = kinds[0]
        if kind not in SCHEMA_TYPES:
            raise invalid(f"The sandbox does not support properties of type {kind} ({path}).")
        config = spec[kind] if spec[kind] is not None else {}
        if not isinstance(config, dict):
            raise body_invalid(f"{path}.{kind}", "an object", config)
        pid = "title" if kind == "title" else (existing.id if existing else self._new_prop_id(source))
        prop = Prop(pid, name, kind, {}, spec.get("description"))
        if kind in ("select", "multi_select", "status"):
            old = existing.config.get("options", []) if existing and existing.type == kind else []
            prop.config["options"] = [dict(o) for o in old]
            options = config.get(
                "options",
                []
                if kind != "status" or old
                else [{"name": "Not started"}, {"name": "In progress"}, {"name": "Done"}],
            )
            if not isinstance(options, list):
                raise body_invalid(f"{path}.{kind}.options", "an array", options)
            for i, opt in enumerate(options):
                if not isinstance(opt, dict) or not isinstance(opt.get("name"), str):
                    raise body_invalid(
                        f"{path}.{kind}.options[{i}].name", "a string", (opt or {}).get("name")
                    )
                self._option(prop, opt, f"{path}.{kind}.options[{i}]", create=True)
        elif kind == "number":
            prop.config["format"] = config.get("format", "number")
        elif kind == "relation":
            prop.config.update(self._relation_config(config, f"{path}.relation"))
        elif kind == "unique_id":
            prop.config["prefix"] = config.get("prefix")
        return prop

    def _relation_config(self, config: dict, path: str) -> dict:
        if "data_source_id" in config:
            target = self._source(config["data_source_id"], f"{path}.data_source_id")
        elif "database_id" in config:
            db = self._database(config["database_id"], f"{path}.database_id")
            target = db.sources[0]
        else:
            raise body_invalid(f"{path}.data_source_id", "defined", _MISSING)
        return {
            "database_id": target.database.id,
            "data_source_id": target.id,
            "type": "single_property",
            "single_property": {},
        }

    @staticmethod
    def _new_prop_id(source: DataSource | None) -> str:
        taken = {p.id for p in source.props.values()} if source else set()
        while True:
            pid = "".join(random.choices(_PID_CHARS, k=4))
            if pid not in taken and pid != "title":
                return pid

    @staticmethod
    def _option(prop: Prop, ref: dict, path: str, create: bool) -> dict:
        name = ref.get("name")
        if isinstance(name, str) and len(name) > OPTION_NAME_MAX:
            raise too_long(f"{path}.name.length", OPTION_NAME_MAX, len(name))
        found = prop.option_by(ref)
        if found is None:
            if not create or not isinstance(name, str):
                if prop.type == "status":
                    raise invalid(
                        f'Invalid status option. Status option "{name or ref.get("id")}" does not exist.'
                    )
                raise body_invalid(f"{path}.id", "an existing option id", ref.get("id"))
            color = ref.get("color", "default")
            if color not in COLORS:
                raise body_invalid(f"{path}.color", f"one of {', '.join(COLORS)}", color)
            found = {"id": new_id(), "name": name, "color": color, "description": ref.get("description")}
            prop.config["options"].append(found)
        elif "color" in ref and ref["color"] in COLORS:
            found["color"] = ref["color"]
        return found

    def _parse_schema(self, source: DataSource, props: Any, path: str) -> None:
        if not isinstance(props, dict):
            raise body_invalid(path, "an object", props)
        for name, spec in props.items():
            source.props[name] = self._parse_prop(source, name, spec, f"{path}.{name}")
        titles = [p for p in source.props.values() if p.type == "title"]
        if len(titles) != 1:
            raise invalid(
                f"body failed validation: {path} should have exactly one title property, "
                f"instead had `{len(titles)}`."
            )

    # ----------------------------------------------------------------------------- databases / sources
    @_mutates
    def create_database(self, body: dict, version: str) -> dict:
        with self.lock:
            parent = body.get("parent", _MISSING)
            if not isinstance(parent, dict) or "page_id" not in parent:
                raise body_invalid("body.parent.page_id", "defined", _MISSING)
            parent_page = self._page(parent["page_id"], "body.parent.page_id")
            self._check_block_limit()
            title = parse_rich_text(body.get("title", []), "body.title")
            db = Database(
                new_id(),
                parent_page.id,
                title,
                _now(),
                is_inline=bool(body.get("is_inline")),
                icon=body.get("icon"),
                cover=body.get("cover"),
            )
            if "description" in body:
                db.description = parse_rich_text(body["description"], "body.description")
            initial = body.get("initial_data_source") or {}
            if not isinstance(initial, dict):
                raise body_invalid("body.initial_data_source", "an object", initial)
            props = initial.get("properties") or {"Name": {"title": {}}}
            source = self._new_source(db, title)
            self._parse_schema(source, props, "body.initial_data_source.properties")
            db.sources.append(source)
            self.databases[db.id] = db
            self.sources[source.id] = source
            self._children.setdefault(parent_page.id, []).append(db.id)
            return self.render_database(db, version)

    def get_database(self, database_id: str, version: str) -> dict:
        with self.lock:
            return self.render_database(self._database(database_id), version)

    @_mutates
    def update_database(self, database_id: str, body: dict, version: str) -> dict:
        with self.lock:
            self._check_archived(body, version)
            db = self._database(database_id)
            if "title" in body:
                db.title = parse_rich_text(body["title"], "body.title")
            if "description" in body:
                db.description = parse_rich_text(body["description"], "body.description")
            for key in ("icon", "cover"):
                if key in body:
                    setattr(db, key, body[key])
            if "is_inline" in body:
                db.is_inline = bool(body["is_inline"])
            trash = self._trash_flag(body)
            if trash is not None:
                db.in_trash = trash
            db.edited = _now()
            return self.render_database(db, version)

    @_mutates
    def create_source(self, body: dict, version: str) -> dict:
        with self.lock:
            parent = body.get("parent", _MISSING)
            if not isinstance(parent, dict) or "database_id" not in parent:
                raise body_invalid("body.parent.database_id", "defined", _MISSING)
            db = self._database(parent["database_id"], "body.parent.database_id")
            source = self._new_source(
                db, parse_rich_text(body.get("title", []), "body.title"), body.get("icon")
            )
            self._parse_schema(source, body.get("properties", _MISSING), "body.properties")
            db.sources.append(source)
            self.sources[source.id] = source
            return self.render_source(source, version)

    def get_source(self, source_id: str, version: str) -> dict:
        with self.lock:
            return self.render_source(self._source(source_id), version)

    @_mutates
    def update_source(self, source_id: str, body: dict, version: str) -> dict:
        with self.lock:
            self._check_archived(body, version)
            source = self._source(source_id)
            if "title" in body:
                source.title = parse_rich_text(body["title"], "body.title")
            if "description" in body:
                source.description = parse_rich_text(body["description"], "body.description")
            if "icon" in body:
                source.icon = body["icon"]
            props = body.get("properties")
            if props is not None:
                self._update_schema(source, props)
            trash = self._trash_flag(body)
            if trash is not None:
                source.in_trash = trash
            source.edited = _now()
            return self.render_source(source, version)

    def _update_schema(self, source: DataSource, props: Any) -> None:
        if not isinstance(props, dict):
            raise body_invalid("body.properties", "an object", props)
        new_props = dict(source.props)  # applied atomically once every change validated
        for key, spec in props.items():
            path = f"body.properties.{key}"
            existing = next((p for p in new_props.values() if key in (p.name, p.id)), None)
            if spec is None:
                if existing is None:
                    raise invalid(f"{key} is not a property that exists.")
                if existing.type == "title":
                    raise invalid(f"Cannot delete the title property {existing.name}.")
                del new_props[existing.name]
                continue
            if not isinstance(spec, dict):
                raise body_invalid(path, "an object or `null`", spec)
            name = spec.get("name", existing.name if existing else key)
            if not isinstance(name, str) or not name:
                raise body_invalid(f"{path}.name", "a non-empty string", name)
            if existing is not None:
                del new_props[existing.name]
            if name in new_props:
                raise invalid(f"Cannot rename {key} to {name}: a property with that name already exists.")
            prop = self._parse_prop(source, name, spec, path, existing)
            if prop is existing:
                prop = Prop(
                    existing.id,
                    name,
                    existing.type,
                    existing.config,
                    spec.get("description", existing.description),
                )
            new_props[name] = prop
        titles = [p for p in new_props.values() if p.type == "title"]
        if len(titles) != 1:
            raise invalid(f"A data source must have exactly one title property, instead had `{len(titles)}`.")
        old_types = {p.id: p.type for p in source.props.values()}
        source.props = new_props
        for pid in list(source.index):
            prop = source.prop_by_id(pid)
            if prop is None or prop.type != old_types.get(pid):
                del source.index[pid]
        for prop in new_props.values():
            if prop.type != old_types.get(prop.id, prop.type):
                for page in source.pages:
                    page.values.pop(prop.id, None)

    # ----------------------------------------------------------------------------- page writes
    @_mutates
    def create_page(self, body: dict, version: str) -> dict:
        with self.lock:
            self._check_archived(body, version)
            parent = body.get("parent", _MISSING)
            if not isinstance(parent, dict):
                raise body_invalid("body.parent", "defined", parent)
            children = body.get("children")
            if children is not None and (not isinstance(children, list) or len(children) > ARRAY_MAX):
                raise too_long("body.children.length", ARRAY_MAX, len(children or []))
            props = body.get("properties", {})
            if not isinstance(props, dict):
                raise body_invalid("body.properties", "an object", props)
            if "data_source_id" in parent:
                target: DataSource | str = self._source(
                    parent["data_source_id"], "body.parent.data_source_id"
                )
            elif "database_id" in parent:
                db = self._database(parent["database_id"], "body.parent.database_id")
                if len(db.sources) != 1:
                    raise invalid(
                        f"Database {db.id} has {len(db.sources)} data sources; "
                        "use parent.data_source_id to pick one."
                    )
                target = db.sources[0]
            elif "page_id" in parent:
                target = self._page(parent["page_id"], "body.parent.page_id").id
            else:
                raise body_invalid("body.parent.data_source_id", "defined", _MISSING)
            values = self._parse_values(target, props)
            self._check_block_limit()
            page = self._new_page(target)
            self._apply_values(page, values)
            page.icon, page.cover = body.get("icon"), body.get("cover")
            return self.render_page(page, version)

    @_mutates
    def update_page(self, page_id: str, body: dict, version: str) -> dict:
        with self.lock:
            self._check_archived(body, version)
            page = self._page(page_id)
            trash = self._trash_flag(body)
            props = body.get("properties")
            if props is not None and not isinstance(props, dict):
                raise body_invalid("body.properties", "an object", props)
            # Editing a page in the trash, or trashing it again, is refused until it is restored.
            if page.in_trash and trash is not False and (props or trash or "icon" in body or "cover" in body):
                raise invalid(ARCHIVED_MESSAGE)
            target = page.parent if isinstance(page.parent, DataSource) else page.parent or "workspace"
            values = self._parse_values(target, props or {})
            self._apply_values(page, values)
            for key in ("icon", "cover"):
                if key in body:
                    setattr(page, key, body[key])
            if "is_locked" in body:
                page.is_locked = bool(body["is_locked"])
            if trash is not None:
                page.in_trash = trash
            page.edited = _minute(_now())
            return self.render_page(page, version)

    def _parse_values(self, target: DataSource | str, props: dict) -> dict[str, Any]:
        """Validate a ``properties`` body against the schema; returns prop id -> compact value."""
        out: dict[str, Any] = {}
        if not isinstance(target, DataSource):
            for key, value in props.items():
                if key != "title":
                    raise invalid(f"{key} is not a property that exists.")
                raw = value.get("title", _MISSING) if isinstance(value, dict) else value
                out["title"] = parse_rich_text(raw, "body.properties.title.title")
            return out
        for key, value in props.items():
            prop = target.prop(key)
            if prop is None:
                raise invalid(f"{key} is not a property that exists.")
            out[prop.id] = self._parse_value(target, prop, value, f"body.properties.{key}")
        return out

    def _parse_value(self, source: DataSource, prop: Prop, value: Any, path: str) -> Any:
        kind = prop.type
        if kind in READ_ONLY:
            raise invalid(f"Cannot update property {prop.name} of type {kind}: it is read-only.")
        if isinstance(value, list) and kind in ("title", "rich_text", "multi_select", "relation", "people"):
            raw = value  # Notion accepts the bare array for array-valued properties
        elif isinstance(value, dict) and kind in value:
            raw = value[kind]
        elif isinstance(value, dict) and (
            value.get("type") not in (None, kind) or any(k in SCHEMA_TYPES and k != kind for k in value)
        ):
            raise invalid(f"{prop.name} is expected to be {kind}.")
        else:
            raise body_invalid(f"{path}.{kind}", "defined", _MISSING)
        vpath = f"{path}.{kind}"
        if kind in ("title", "rich_text"):
            return parse_rich_text(raw, vpath)
        if kind == "number":
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
                raise body_invalid(vpath, "a number or `null`", raw)
            return raw
        if kind == "checkbox":
            if not isinstance(raw, bool):
                raise body_invalid(vpath, "a boolean", raw)
            return raw
        if kind in ("url", "email", "phone_number"):
            return self._parse_string(kind, raw, vpath)
        if kind in ("select", "status"):
            if raw is None:
                return None
            if not isinstance(raw, dict) or not ({"id", "name"} & raw.keys()):
                raise body_invalid(vpath, "an object with a name or id, or `null`", raw)
            return self._option(prop, raw, vpath, create=kind == "select")["id"]
        if kind == "date":
            return parse_date_value(raw, vpath)
        if not isinstance(raw, list):
            raise body_invalid(vpath, "an array", raw)
        if len(raw) > ARRAY_MAX:
            raise too_long(f"{vpath}.length", ARRAY_MAX, len(raw))
        if kind == "multi_select":
            ids = []
            for i, ref in enumerate(raw):
                if not isinstance(ref, dict) or not ({"id", "name"} & ref.keys()):
                    raise body_invalid(f"{vpath}[{i}]", "an object with a name or id", ref)
                ids.append(self._option(prop, ref, f"{vpath}[{i}]", create=True)["id"])
            return tuple(dict.fromkeys(ids))
        refs = []
        for i, ref in enumerate(raw):
            ref_id = ref.get("id") if isinstance(ref, dict) else None
            refs.append(parse_id(ref_id, f"{vpath}[{i}].id"))
        if kind == "relation":
            related = self.sources.get(prop.config["data_source_id"])
            for i, ref_id in enumerate(refs):
                page = self.pages.get(ref_id)
                if page is None or page.parent is not related:
                    raise invalid(
                        f"body failed validation: {vpath}[{i}].id should be a page of data source "
                        f'{prop.config["data_source_id"]}, instead was `"{ref_id}"`.'
                    )
        return tuple(dict.fromkeys(refs))

    @staticmethod
    def _parse_string(kind: str, raw: Any, path: str) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise body_invalid(path, "a string or `null`", raw)
        limit = URL_MAX if kind == "url" else EMAIL_PHONE_MAX
        if len(raw) > limit:
            raise too_long(f"{path}.length", limit, len(raw))
        if kind == "email" and "@" not in raw:  # sandbox choice, see the module docstring
            raise body_invalid(path, "an email address", raw)
        return raw

    def _apply_values(self, page: Page, values: dict[str, Any]) -> None:
        source = page.parent if isinstance(page.parent, DataSource) else None
        text_ids = {p.id for p in source.props.values() if p.type in ("title", "rich_text")} if source else ()
        for pid, value in values.items():
            if source is not None and pid in text_ids:
                index = source.index.setdefault(pid, {})
                old = plain_text(page.values.get(pid))
                if old and page.id in index.get(old, ()):
                    index[old].discard(page.id)
                    if not index[old]:
                        del index[old]
                new = plain_text(value)
                if new:
                    index.setdefault(new, set()).add(page.id)
            page.values[pid] = value

    @_mutates
    def delete_block(self, block_id: str, version: str) -> dict:
        with self.lock:
            bid = parse_id(block_id, "path.block_id")
            page, db = self.pages.get(bid), self.databases.get(bid)
            if page is None and db is None:
                raise not_found("block", bid)
            now = _now()
            if page is not None:
                page.in_trash, page.edited = True, _minute(now)
            else:
                db.in_trash, db.edited = True, now
            return self._render_block(bid, version)

    # ----------------------------------------------------------------------------- page reads
    def get_page(self, page_id: str, version: str, only: set[str] | None = None) -> dict:
        with self.lock:
            return self.render_page(self._page(page_id), version, only)

    def property_items(
        self, page_id: str, prop_key: str, cursor: str | None, page_size: int, next_url: str
    ) -> dict:
        """``GET /v1/pages/{id}/properties/{prop_id}``: paginated for arrays, one item otherwise."""
        with self.lock:
            page = self._page(page_id)
            if isinstance(page.parent, DataSource):
                prop = page.parent.prop(prop_key)
            else:
                prop = Prop("title", "title", "title", {}) if prop_key == "title" else None
            if prop is None:
                raise not_found("property", prop_key)
            if prop.type not in ("title", "rich_text", "relation", "people"):
                value = self._render_value(page, prop)
                return {
                    "object": "property_item",
                    "id": prop.id,
                    "type": prop.type,
                    prop.type: value[prop.type],
                }
            raw = page.values.get(prop.id) or ()
            start = _decode_offset(cursor)
            chunk = raw[start : start + page_size]
            if prop.type in ("title", "rich_text"):
                values = render_rich_text(chunk)
            elif prop.type == "relation":
                values = [{"id": i} for i in chunk]
            else:
                values = [user(i) for i in chunk]
            more = start + page_size < len(raw)
            nxt = f"o{start + page_size}" if more else None
            return {
                "object": "list",
                "results": [
                    {"object": "property_item", "type": prop.type, "id": prop.id, prop.type: v}
                    for v in values
                ],
                "next_cursor": nxt,
                "has_more": more,
                "type": "property_item",
                "property_item": {
                    "id": prop.id,
                    "next_url": f"{next_url}?start_cursor={nxt}" if nxt else None,
                    "type": prop.type,
                    prop.type: {},
                },
            }

    def query(self, source_id: str, body: dict, version: str, only: set[str] | None = None) -> dict:
        """One page of a data source query; a query matching more than ``query_result_cap`` pages is
        cut there (``has_more`` false) and every page of it says ``request_status: incomplete``."""
        with self.lock:
            source = self._source(source_id)
            page_size = _page_size(body.get("page_size"), "body.page_size")
            matched, positions = self._matching(source, body.get("filter"), body.get("sorts") or [])
            start = 0
            if (cursor := body.get("start_cursor")) is not None:
                start = positions.get(parse_id(cursor, "body.start_cursor"), -1)
                if start < 0:
                    raise body_invalid("body.start_cursor", "a cursor returned by this query", cursor)
            end = min(start + page_size, self.query_result_cap)
            more = end < min(len(matched), self.query_result_cap)
            results = [self.render_page(p, version, only) for p in matched[start:end]]
            out = _list(results, matched[end].id if more else None)
            if len(matched) > self.query_result_cap:
                out["request_status"] = dict(INCOMPLETE)
            return out

    def _matching(self, source: DataSource, flt: Any, sorts: Any) -> tuple[list[Page], dict[str, int]]:
        """The pages a query matches, in its order, and each one's position (cached until a write)."""
        predicate = _compile_filter(source, flt, "body.filter", 0) if flt else None
        if not isinstance(sorts, list):
            raise body_invalid("body.sorts", "an array", sorts)
        keys = _sort_keys(source, sorts)
        query = json.dumps([flt, sorts], sort_keys=True, default=str)
        cached = self._query_cache.get(source.id)
        if cached is not None and cached[0] == query and not self.query_lag_s:
            return cached[1], cached[2]
        candidates = self._candidates(source, flt)
        if self.query_lag_s:
            indexed = _now() - dt.timedelta(seconds=self.query_lag_s)
            candidates = [p for p in candidates if p.born <= indexed]
        matched = [p for p in candidates if not p.in_trash and (predicate is None or predicate(p))]
        if keys:
            matched = _sorted(matched, keys)
        positions = {p.id: i for i, p in enumerate(matched)}
        if not self.query_lag_s:
            self._query_cache[source.id] = (query, matched, positions)
        return matched, positions

    def _candidates(self, source: DataSource, flt: Any) -> list[Page]:
        """Pages that can match: an index hit for a text ``equals`` (possibly inside ``and``), else all."""
        leaves = flt.get("and") if isinstance(flt, dict) and isinstance(flt.get("and"), list) else [flt]
        for leaf in leaves:
            if not isinstance(leaf, dict) or "property" not in leaf:
                continue
            prop = source.prop(leaf["property"]) if isinstance(leaf["property"], str) else None
            if prop is None or prop.id not in source.index:
                continue
            for key in ("rich_text", "title"):
                cond = leaf.get(key)
                if isinstance(cond, dict) and isinstance(cond.get("equals"), str) and cond["equals"]:
                    ids = source.index[prop.id].get(cond["equals"], ())
                    return sorted((self.pages[i] for i in ids), key=lambda p: p.seq)
        return source.pages

    def block_children(self, block_id: str, cursor: str | None, page_size: int, version: str) -> dict:
        """``GET /v1/blocks/{id}/children`` of a page: its child pages and databases (not trashed), in
        creation order, at once (unlike search)."""
        with self.lock:
            page = self._lookup(self.pages, block_id, "block", "path.block_id")
            ids = [i for i in self._children.get(page.id, ()) if not self._block_trashed(i)]
            start = 0
            if cursor is not None:
                cid = parse_id(cursor, "query.start_cursor")
                if cid not in ids:
                    raise body_invalid("query.start_cursor", "a cursor returned by this request", cursor)
                start = ids.index(cid)
            more = start + page_size < len(ids)
            results = [self._render_block(i, version) for i in ids[start : start + page_size]]
            return _list(results, ids[start + page_size] if more else None, "block")

    def _block_trashed(self, block_id: str) -> bool:
        page, db = self.pages.get(block_id), self.databases.get(block_id)
        return bool(page.in_trash if page is not None else db is None or db.in_trash)

    def _render_block(self, block_id: str, version: str) -> dict:
        """A page or database as the block holding it in its parent (``child_page`` / ``child_database``)."""
        page = self.pages.get(block_id)
        if page is not None:
            parent = page.parent
            parent_obj = (
                {"type": "data_source_id", "data_source_id": parent.id}
                if isinstance(parent, DataSource)
                else {"type": "page_id", "page_id": parent}
                if parent
                else {"type": "workspace", "workspace": True}
            )
            kind, title, trashed = "child_page", page.title_text(), page.in_trash
            created, edited = page.created, page.edited
        else:
            db = self.databases[block_id]
            parent_obj = {"type": "page_id", "page_id": db.parent_page_id}
            kind, title, trashed = "child_database", plain_text(db.title), db.in_trash
            created, edited = db.created, db.edited
        obj = {
            "object": "block",
            "id": block_id,
            "parent": parent_obj,
            "created_time": fmt_minute(created),
            "last_edited_time": fmt_minute(edited),
            "created_by": user(),
            "last_edited_by": user(),
            "has_children": False,
            "in_trash": trashed,
            "type": kind,
            kind: {"title": title},
        }
        return self._with_archived(obj, trashed, version)

    @_mutates
    def seed_pages(
        self, source_id: str, properties: Iterable[dict], start: dt.datetime, per_minute: int
    ) -> list[str]:
        """Pages made without requests (validated as ``POST /v1/pages``): the ``i``-th is created
        ``i // per_minute`` minutes after ``start``. Returns their ids in order."""
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        source = self._source(source_id, "data_source_id")
        ids = []
        for i, props in enumerate(properties):
            values = self._parse_values(source, props)
            page = self._new_page(source, _as_utc(start) + dt.timedelta(minutes=i // per_minute))
            self._apply_values(page, values)
            ids.append(page.id)
        return ids

    def search(self, body: dict, version: str) -> dict:
        with self.lock:
            page_size = _page_size(body.get("page_size"), "body.page_size")
            text = body.get("query") or ""
            if not isinstance(text, str):
                raise body_invalid("body.query", "a string", text)
            flt = body.get("filter")
            kinds = {"page", "data_source"}
            if flt is not None:
                value = flt.get("value") if isinstance(flt, dict) else None
                if value not in kinds:
                    raise body_invalid("body.filter.value", '`"page"` or `"data_source"`', value)
                kinds = {value}
            needle = text.lower()
            items: list[tuple[dt.datetime, str, Any]] = []
            if "page" in kinds:
                items += [
                    (p.edited, p.id, p)
                    for p in self.pages.values()
                    if not p.in_trash and needle in p.title_text().lower()
                ]
            if "data_source" in kinds:
                indexed = self.clock.now() - self.search_lag_s
                items += [
                    (s.edited, s.id, s)
                    for s in self.sources.values()
                    if not s.in_trash and s.born <= indexed and needle in plain_text(s.title).lower()
                ]
            sort = body.get("sort") or {}
            items.sort(key=lambda it: it[0], reverse=sort.get("direction", "descending") != "ascending")
            start = 0
            if body.get("start_cursor") is not None:
                cid = parse_id(body["start_cursor"], "body.start_cursor")
                start = next((i for i, it in enumerate(items) if it[1] == cid), len(items))
            window = items[start : start + page_size + 1]
            more = len(window) > page_size
            results = [
                self.render_page(o, version) if isinstance(o, Page) else self.render_source(o, version)
                for _, _, o in window[:page_size]
            ]
            return _list(results, window[page_size][1] if more else None)

    # ----------------------------------------------------------------------------- sandbox introspection
    def source_pages(self, source_id: str, include_trashed: bool = False) -> list[dict]:
        with self.lock:
            source = self._source(source_id)
            return [self.render_page(p, V2025) for p in source.pages if include_trashed or not p.in_trash]

    def page_counts(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            out = {}
            for s in self.sources.values():
                trashed = sum(p.in_trash for p in s.pages)
                out[s.id] = {
                    "title": plain_text(s.title),
                    "pages": len(s.pages) - trashed,
                    "trashed": trashed,
                }
            return out

    def duplicates(self, prop_name: str = "Salesforce Id") -> dict[str, dict[str, Any]]:
        """Per data source with duplicates: values of ``prop_name`` held by >1 non-trashed page."""
        with self.lock:
            out = {}
            for s in self.sources.values():
                prop = s.props.get(prop_name)
                if prop is None or prop.id not in s.index:
                    continue
                dups = {}
                for value, ids in s.index[prop.id].items():
                    live = sorted(i for i in ids if not self.pages[i].in_trash)
                    if len(live) > 1:
                        dups[value] = live
                if dups:
                    out[s.id] = {"count": len(dups), "ids": dups}
            return out

    @_mutates
    def trash_page(self, page_id: str) -> None:
        """Move a page to the trash as a person does in the app (no API request)."""
        page = self._page(page_id)
        page.in_trash, page.edited = True, _now()

    @_mutates
    def reset(self) -> None:
        """Drop every database, data source and page except the root page."""
        with self.lock:
            root = self.pages[self.root_page_id]
            self.pages = {root.id: root}
            self.databases.clear()
            self.sources.clear()
            self._children.clear()


def _decode_offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (isinstance(cursor, str) and cursor.startswith("o") and cursor[1:].isdigit()):
        raise invalid(
            f"query failed validation: query.start_cursor should be a valid cursor, instead was "
            f"`{_js(cursor)}`."
        )
    return int(cursor[1:])


def _page_size(value: Any, path: str) -> int:
    if value is None:
        return PAGE_SIZE_MAX
    if isinstance(value, bool) or not isinstance(value, int):
        raise body_invalid(path, "a number", value)
    if value > PAGE_SIZE_MAX:
        raise too_long(path, PAGE_SIZE_MAX, value)
    if value < 1:
        raise invalid(f"body failed validation: {path} should be ≥ `1`, instead was `{value}`.")
    return value


def _list(results: list[dict], next_cursor: str | None, kind: str = "page_or_data_source") -> dict:
    return {
        "object": "list",
        "results": results,
        "next_cursor": next_cursor,
        "has_more": next_cursor is not None,
        "type": kind,
        kind: {},
    }


# --------------------------------------------------------------------------------------------- filters
TEXT_OPS = (
    "equals",
    "does_not_equal",
    "contains",
    "does_not_contain",
    "starts_with",
    "ends_with",
    "is_empty",
    "is_not_empty",
)
NUMBER_OPS = (
    "equals",
    "does_not_equal",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "is_empty",
    "is_not_empty",
)
DATE_OPS = ("equals", "before", "after", "on_or_before", "on_or_after", "is_empty", "is_not_empty")
Predicate = Callable[[Page], bool]


def _compile_filter(source: DataSource, flt: Any, path: str, depth: int) -> Predicate:
    if not isinstance(flt, dict):
        raise body_invalid(path, "an object", flt)
    for op in ("and", "or"):
        if op in flt:
            if depth >= 2:
                raise invalid(
                    f"body failed validation: {path} should be a property filter; compound "
                    "filters may be nested at most 2 levels deep."
                )
            parts = flt[op]
            if not isinstance(parts, list):
                raise body_invalid(f"{path}.{op}", "an array", parts)
            preds = [_compile_filter(source, f, f"{path}.{op}[{i}]", depth + 1) for i, f in enumerate(parts)]
            if op == "and":
                return lambda p: all(pred(p) for pred in preds)
            return lambda p: any(pred(p) for pred in preds)
    if "timestamp" in flt:
        kind = flt["timestamp"]
        if kind not in ("created_time", "last_edited_time"):
            raise body_invalid(f"{path}.timestamp", '`"created_time"` or `"last_edited_time"`', kind)
        return _date_predicate(_timestamp(kind), flt.get(kind), f"{path}.{kind}")
    key = flt.get("property", _MISSING)
    if not isinstance(key, str):
        raise body_invalid(f"{path}.property", "a string", key)
    prop = source.prop(key)
    if prop is None:
        raise invalid(f"Could not find property with name or id: {key}")
    kinds = [k for k in flt if k != "property"]
    if len(kinds) != 1:
        raise invalid(f"body failed validation: {path} should have exactly one filter type.")
    kind = kinds[0]
    cond = flt[kind]
    cpath = f"{path}.{kind}"
    text_like = prop.type in TEXT_TYPES and kind in TEXT_TYPES
    if kind != prop.type and not text_like and not (prop.type == "unique_id" and kind == "number"):
        raise invalid(
            f"body failed validation: {cpath} does not match the type of property {prop.name} ({prop.type})."
        )
    if not isinstance(cond, dict) or len(cond) != 1:
        raise body_invalid(cpath, "an object with exactly one condition", cond)
    ((op, arg),) = cond.items()
    pid = prop.id
    if prop.type in TEXT_TYPES:
        getter = (
            (lambda p: plain_text(p.values.get(pid)))
            if prop.type in ("title", "rich_text")
            else (lambda p: p.values.get(pid) or "")
        )
        return _text_predicate(getter, op, arg, cpath)
    if prop.type in ("number", "unique_id"):
        getter = (lambda p: p.seq) if prop.type == "unique_id" else (lambda p: p.values.get(pid))
        return _number_predicate(getter, op, arg, cpath)
    if prop.type == "checkbox":
        if op not in ("equals", "does_not_equal") or not isinstance(arg, bool):
            raise body_invalid(f"{cpath}.{op}", "a boolean equals/does_not_equal", arg)
        return (
            (lambda p: bool(p.values.get(pid)) == arg)
            if op == "equals"
            else (lambda p: bool(p.values.get(pid)) != arg)
        )
    if prop.type in ("select", "status"):

        def name_of(p: Page) -> str | None:
            opt = prop.option_by({"id": p.values.get(pid)}) if p.values.get(pid) else None
            return opt["name"] if opt else None

        return _choice_predicate(name_of, op, arg, cpath)
    if prop.type in ("multi_select", "relation", "people"):
        if prop.type == "multi_select":

            def names(p: Page) -> set[str]:
                return {o["name"] for o in (prop.option_by({"id": i}) for i in p.values.get(pid, ())) if o}
        else:
            if op in ("contains", "does_not_contain"):
                arg = parse_id(arg, f"{cpath}.{op}")

            def names(p: Page) -> set[str]:
                return set(p.values.get(pid, ()))

        return _contains_predicate(names, op, arg, cpath)
    if prop.type == "date":

        def start_of(p: Page) -> dt.datetime | None:
            value = p.values.get(pid)
            return _date_key(value["start"]) if value else None

        return _date_predicate(start_of, cond, cpath)
    if prop.type in ("created_time", "last_edited_time"):
        return _date_predicate(_timestamp(prop.type), cond, cpath)
    raise invalid(f"The sandbox cannot filter on properties of type {prop.type}.")


def _timestamp(kind: str) -> Callable[[Page], dt.datetime]:
    """A page's ``created_time`` (its ``created``, to the minute); any other kind reads
    ``last_edited_time``."""
    return operator.attrgetter("created" if kind == "created_time" else "edited")


def _text_predicate(get: Callable[[Page], str], op: str, arg: Any, path: str) -> Predicate:
    if op not in TEXT_OPS:
        raise body_invalid(f"{path}", f"one of {', '.join(TEXT_OPS)}", op)
    if op in ("is_empty", "is_not_empty"):
        return (lambda p: not get(p)) if op == "is_empty" else (lambda p: bool(get(p)))
    if not isinstance(arg, str):
        raise body_invalid(f"{path}.{op}", "a string", arg)
    low = arg.lower()
    tests: dict[str, Predicate] = {
        "equals": lambda p: get(p) == arg,
        "does_not_equal": lambda p: get(p) != arg,
        "contains": lambda p: low in get(p).lower(),
        "does_not_contain": lambda p: low not in get(p).lower(),
        "starts_with": lambda p: get(p).lower().startswith(low),
        "ends_with": lambda p: get(p).lower().endswith(low),
    }
    return tests[op]


def _number_predicate(get: Callable[[Page], Any], op: str, arg: Any, path: str) -> Predicate:
    if op not in NUMBER_OPS:
        raise body_invalid(path, f"one of {', '.join(NUMBER_OPS)}", op)
    if op in ("is_empty", "is_not_empty"):
        return (lambda p: get(p) is None) if op == "is_empty" else (lambda p: get(p) is not None)
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise body_invalid(f"{path}.{op}", "a number", arg)
    compare: dict[str, Callable[[Any], bool]] = {
        "equals": lambda v: v == arg,
        "does_not_equal": lambda v: v != arg,
        "greater_than": lambda v: v > arg,
        "less_than": lambda v: v < arg,
        "greater_than_or_equal_to": lambda v: v >= arg,
        "less_than_or_equal_to": lambda v: v <= arg,
    }
    test = compare[op]
    if op == "does_not_equal":
        return lambda p: get(p) is None or test(get(p))
    return lambda p: get(p) is not None and test(get(p))


def _choice_predicate(get: Callable[[Page], str | None], op: str, arg: Any, path: str) -> Predicate:
    if op in ("is_empty", "is_not_empty"):
        return (lambda p: get(p) is None) if op == "is_empty" else (lambda p: get(p) is not None)
    if op not in ("equals", "does_not_equal") or not isinstance(arg, str):
        raise body_invalid(f"{path}.{op}", "a string equals/does_not_equal/is_empty/is_not_empty", arg)
    return (lambda p: get(p) == arg) if op == "equals" else (lambda p: get(p) != arg)


def _contains_predicate(get: Callable[[Page], set[str]], op: str, arg: Any, path: str) -> Predicate:
    if op in ("is_empty", "is_not_empty"):
        return (lambda p: not get(p)) if op == "is_empty" else (lambda p: bool(get(p)))
    if op not in ("contains", "does_not_contain") or not isinstance(arg, str):
        raise body_invalid(f"{path}.{op}", "a string contains/does_not_contain/is_empty/is_not_empty", arg)
    return (lambda p: arg in get(p)) if op == "contains" else (lambda p: arg not in get(p))


def _date_predicate(get: Callable[[Page], dt.datetime | None], cond: Any, path: str) -> Predicate:
    if not isinstance(cond, dict) or len(cond) != 1:
        raise body_invalid(path, "an object with exactly one condition", cond)
    ((op, arg),) = cond.items()
    if op not in DATE_OPS:
        raise body_invalid(path, f"one of {', '.join(DATE_OPS)}", op)
    if op in ("is_empty", "is_not_empty"):
        return (lambda p: get(p) is None) if op == "is_empty" else (lambda p: get(p) is not None)
    when, date_only, _ = _parse_iso(arg, f"{path}.{op}")
    when = _as_utc(when)

    def key(p: Page) -> Any:
        value = get(p)
        if value is None:
            return None
        return _as_utc(value).date() if date_only else _as_utc(value)

    ref = when.date() if date_only else when
    compare: dict[str, Callable[[Any], bool]] = {
        "equals": lambda v: v == ref,
        "before": lambda v: v < ref,
        "after": lambda v: v > ref,
        "on_or_before": lambda v: v <= ref,
        "on_or_after": lambda v: v >= ref,
    }
    test = compare[op]
    return lambda p: (v := key(p)) is not None and test(v)


SortKey = tuple[Callable[[Page], Any], bool]  # (value of a page, descending)


def _sort_keys(source: DataSource, sorts: list) -> list[SortKey]:
    keys: list[SortKey] = []
    for i, spec in enumerate(sorts):
        path = f"body.sorts[{i}]"
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        direction = spec.get("direction", "ascending")
        if direction not in ("ascending", "descending"):
            raise body_invalid(f"{path}.direction", '`"ascending"` or `"descending"`', direction)
        if "timestamp" in spec:
            if spec["timestamp"] not in ("created_time", "last_edited_time"):
                raise body_invalid(
                    f"{path}.timestamp", '`"created_time"` or `"last_edited_time"`', spec["timestamp"]
                )
            keys.append((_timestamp(spec["timestamp"]), direction == "descending"))
            continue
        prop = source.prop(spec.get("property", ""))
        if prop is None:
            raise invalid(f"Could not find sort property with name or id: {spec.get('property')}")
        keys.append((_sort_key(prop), direction == "descending"))
    return keys


def _sorted(pages: Sequence[Page], keys: list[SortKey]) -> list[Page]:
    """``pages`` ordered by ``keys``, empty values last in both directions. Ties go in an arbitrary
    (but stable) order, neither by creation nor by page id: timestamps are per minute, and Notion
    keeps no order among the pages of one minute."""
    ordered = sorted(pages, key=lambda page: page.id[::-1])
    for get, descending in reversed(keys):  # stable sorts, the last key first
        valued = [(get(page), page) for page in ordered]
        present = [item for item in valued if item[0] is not None]
        present.sort(key=operator.itemgetter(0), reverse=descending)
        ordered = [page for _, page in present] + [page for value, page in valued if value is None]
    return ordered


def _sort_key(prop: Prop) -> Callable[[Page], Any]:
    pid = prop.id
    if prop.type in ("title", "rich_text"):
        return lambda p: plain_text(p.values.get(pid)).lower() or None
    if prop.type in ("select", "status"):
        return lambda p: (o := prop.option_by({"id": p.values.get(pid)})) and o["name"]
    if prop.type == "date":
        return lambda p: _date_key(v["start"]) if (v := p.values.get(pid)) else None
    if prop.type == "checkbox":
        return lambda p: bool(p.values.get(pid))
    if prop.type in ("created_time", "last_edited_time"):
        return _timestamp(prop.type)
    if prop.type == "unique_id":
        return lambda p: p.seq
    return lambda p: v if isinstance(v := p.values.get(pid), (int, float, str)) else None
