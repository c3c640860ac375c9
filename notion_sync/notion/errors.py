"""Errors raised by the Notion client, split by what the caller should do about them.

- `TransientNotionError`: try again later (429, 529, 409, 500/502/503/504, timeouts, connection
  errors). The client has already retried it `max_retries` times when it reaches the caller.
- `AmbiguousWriteError` (a transient error): a create whose outcome is unknown. Notion has no
  idempotency keys, so the caller must look the record up before creating it again.
- `PermanentNotionError`: the request itself is wrong (400, 401, 403, 404, 413, …); retrying
  cannot help, record it once.

No message, ``str()`` or ``repr()`` ever contains the integration token.
"""

from __future__ import annotations

# HTTP statuses worth retrying; 0 stands for "no HTTP response" (timeout, connection error).
TRANSIENT_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504, 529})
# Statuses Notion answers *before* doing anything: retrying them can never duplicate a write.
NOT_APPLIED_STATUSES = frozenset({429, 529})


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
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        text = f"{where}{self.status or 'no response'} {self.code}: {self.message}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        if self.request_id:
            text += f" [request_id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r}, "
            f"method={self.method!r}, path={self.path!r}, retry_after={self.retry_after!r}, "
            f"request_id={self.request_id!r})"
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
            ),
        )

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


def _rebuild(cls, status, code, message, request_id, retry_after, method, path):
    return cls(
        status, code, message, request_id=request_id, retry_after=retry_after, method=method, path=path
    )


class TransientNotionError(NotionApiError):
    """Worth retrying later: rate limited, overloaded, conflict, server error, timeout, network."""


class PermanentNotionError(NotionApiError):
    """The request is wrong (validation, auth, not found, too large): retrying cannot help."""


class AmbiguousWriteError(TransientNotionError):
    """A create that may or may not have been applied (timeout, 5xx or connection lost after sending).

    Look the record up (e.g. by its ``Salesforce Id``) before creating it again.
    """


def error_class(status: int) -> type[NotionApiError]:
    return TransientNotionError if status in TRANSIENT_STATUSES else PermanentNotionError
