"""Errors raised by the Notion client, split by what the caller should do about them.

- `TransientNotionError`: try again later (429, 529, 409, 500/502/503/504, timeouts, connection
  errors). The client has already retried it `max_retries` times when it reaches the caller.
- `AmbiguousWriteError` (a transient error): a create whose outcome is unknown. Notion has no
  idempotency keys, so the caller must look the record up before creating it again.
- `CommittedWriteError` (an ambiguous write): a 503 whose ``additional_data`` says the write was
  saved (``committed_resource_id``) or must not be repeated (``retry_guidance``): never repeated.
- `PermanentNotionError`: the request itself is wrong (400, 404, 413, …); retrying cannot help,
  record it once.
- `RunStoppingError` (a permanent error): no request of the run can succeed (401 bad token, 403
  restricted or the Free plan's block limit, 429 ``public_api_request_blocked``): stop the run at
  once, naming the setting or the cause, instead of failing every record.

No message, ``str()`` or ``repr()`` ever contains the integration token.
"""

from __future__ import annotations

from typing import TypeVar

# HTTP statuses worth retrying; 0 stands for "no HTTP response" (timeout, connection error).
TRANSIENT_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504, 529})
# Statuses Notion answers *before* doing anything, or after writing nothing (409 conflict_error:
# "the transaction could not be completed"): retrying them can never duplicate a write.
NOT_APPLIED_STATUSES = frozenset({409, 429, 529})
# 429 ``additional_data.rate_limit_reason``: which limit was hit (others may appear: a 429 all the same).
RATE_LIMIT_REASONS = {
    "public_api_request_rate_limit": "the connection's request budget (NOTION_RATE_LIMIT_RPS)",
    "public_api_space_request_rate_limit": "the workspace's limit, shared by all its connections",
    "public_api_endpoint_rate_limit": "an endpoint's own limit",
    "public_api_request_blocked": "requests of this connection are blocked",
}
BLOCKED = "public_api_request_blocked"


E = TypeVar("E", bound="NotionApiError")


def limits_hit(reasons: dict[str, int]) -> str:
    """``{reason: 429s}`` as text saying which Notion limit each reason is."""
    return "; ".join(
        f"{count} x {RATE_LIMIT_REASONS.get(reason, 'an unnamed limit')} ({reason})"
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])
    )


class NotionApiError(Exception):
    """A failed Notion API call.

    ``retry_after`` is the server's Retry-After in seconds *of the server's clock* (virtual
    seconds against a sped-up sandbox; divide by the client's ``time_scale`` for real seconds).
    ``status`` is 0 when no HTTP response arrived (timeout, connection error).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
        additional_data: dict | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.method = method
        self.path = path
        self.additional_data = additional_data or {}
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        text = f"{where}{self.status or 'no response'} {self.code}: {self.message}"
        if self.rate_limit_reason:
            text += f" ({self.rate_limit_reason})"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        if self.request_id:
            text += f" [request_id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r}, "
            f"method={self.method!r}, path={self.path!r}, retry_after={self.retry_after!r}, "
            f"request_id={self.request_id!r}, additional_data={self.additional_data!r})"
        )

    def __reduce__(self):  # picklable across processes (Dagster, multiprocessing) despite keyword-only args
        return (
            _rebuild,
            (
                type(self),
                self.status,
                self.code,
                self.message,
                self.request_id,
                self.retry_after,
                self.method,
                self.path,
                self.additional_data,
            ),
        )

    def recast(self, cls: type[E]) -> E:
        """This error as an instance of ``cls`` (same fields)."""
        return cls(
            self.status,
            self.code,
            self.message,
            request_id=self.request_id,
            retry_after=self.retry_after,
            method=self.method,
            path=self.path,
            additional_data=self.additional_data,
        )

    @property
    def rate_limited(self) -> bool:
        return self.status == 429

    @property
    def rate_limit_reason(self) -> str | None:
        """Which limit a 429 hit (``additional_data.rate_limit_reason``), when Notion said."""
        reason = self.additional_data.get("rate_limit_reason") if self.status == 429 else None
        return str(reason) if reason else None

    @property
    def committed_resource_id(self) -> str | None:
        """The id of the object a 503'd write saved anyway (``additional_data.committed_resource_id``)."""
        value = self.additional_data.get("committed_resource_id")
        return str(value) if value else None

    @property
    def do_not_repeat(self) -> bool:
        """Notion's ``retry_guidance`` says the write was saved or must not be sent again."""
        guidance = self.additional_data.get("retry_guidance") or []
        texts = [guidance] if isinstance(guidance, str) else guidance
        return bool(self.committed_resource_id) or any("not repeat" in str(text).lower() for text in texts)


def _rebuild(cls, status, code, message, request_id, retry_after, method, path, additional_data=None):
    return NotionApiError(
        status,
        code,
        message,
        request_id=request_id,
        retry_after=retry_after,
        method=method,
        path=path,
        additional_data=additional_data,
    ).recast(cls)


class TransientNotionError(NotionApiError):
    """Worth retrying later: rate limited, overloaded, conflict, server error, timeout, network."""


class PermanentNotionError(NotionApiError):
    """The request is wrong (validation, auth, not found, too large): retrying cannot help."""


class AmbiguousWriteError(TransientNotionError):
    """A create that may or may not have been applied (timeout, 5xx or connection lost after sending).

    Look the record up (e.g. by its ``Salesforce Id``) before creating it again.
    """


class CommittedWriteError(AmbiguousWriteError):
    """A write (create or update) answered 503 whose ``additional_data`` says it was saved or must not
    be repeated. Never retried: take ``committed_resource_id`` when there is one, else read to confirm."""


class RunStoppingError(PermanentNotionError):
    """No request of this run can succeed: the run stops at once, once, naming what to fix."""


def error_class(status: int) -> type[NotionApiError]:
    if status in (401, 403):
        return RunStoppingError
    return TransientNotionError if status in TRANSIENT_STATUSES else PermanentNotionError


def explain(status: int, message: str, additional_data: dict) -> str:
    """Notion's message, with what to do when the cause is the setup rather than the request."""
    if status == 401:
        return (
            f"{message} Notion refused the integration token: check NOTION_TOKEN (wrong, revoked, or "
            "from another workspace's integration)."
        )
    if status == 403 and "block limit" in message.lower():
        return (
            f"{message} The workspace reached the Free plan's block limit: no page can be created "
            "until the workspace is upgraded (existing pages can still be updated)."
        )
    if status == 403:
        return (
            f"{message} The integration behind NOTION_TOKEN lacks a capability for this request: "
            "give it read, update and insert content capabilities in its settings."
        )
    if additional_data.get("rate_limit_reason") == BLOCKED:
        return f"{message} Notion blocks this connection's requests ({BLOCKED}): not retried."
    return message
