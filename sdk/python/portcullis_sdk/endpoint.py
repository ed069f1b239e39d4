"""Aggregate-API endpoints (the ``endpoint`` world): :class:`Call`, :func:`fetch`,
:func:`fetch_all`, :class:`Reply`, :class:`CallError` and :func:`json_response`, as in the
Rust SDK. An endpoint is a class named ``WitWorld`` with ``handle(self, req)``::

    from portcullis_sdk.endpoint import Call, fetch_all, json_response

    class WitWorld:
        def handle(self, req):
            a, b = fetch_all([Call.get("a", "/a"), Call.get("b", "/b")])
            return json_response(200, {"a": a.ok, "b": b.ok})
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence, Tuple, Union

from componentize_py_types import Err, Ok
from wit_world.imports import types, upstream

Header = Tuple[str, str]

CONTEXT_HEADERS = ("authorization", "cookie", "traceparent", "tracestate", "x-request-id")

_KINDS = {
    upstream.CallError_Timeout: "timeout",
    upstream.CallError_ConnectFailed: "connect-failed",
    upstream.CallError_Overloaded: "overloaded",
    upstream.CallError_UnknownCluster: "unknown-cluster",
    upstream.CallError_LimitExceeded: "limit-exceeded",
    upstream.CallError_UpstreamReset: "upstream-reset",
    upstream.CallError_InvalidCall: "invalid-call",
}


class CallError(Exception):
    """Why a call gave no usable reply. ``str(e)`` reads like the Rust SDK's (``timeout``,
    ``connect failed``, ``status 503``, ...). ``kind`` is one of ``timeout``,
    ``connect-failed``, ``overloaded``, ``unknown-cluster``, ``limit-exceeded``,
    ``upstream-reset``, ``invalid-call`` (the call itself is malformed: a method that is not a
    token, a path not starting with ``/``, an invalid header, ``timeout_ms`` 0; new in WIT
    0.2.0), ``status`` (from :meth:`Result.ok_2xx`), ``bad-body`` (from :meth:`Reply.json`)."""

    def __init__(self, kind: str, detail: Any = None) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(_describe(kind, detail))


def _describe(kind: str, detail: Any) -> str:
    if kind == "limit-exceeded":
        return f"limit exceeded: {detail}"
    if kind == "invalid-call":
        return f"invalid call: {detail}"
    if kind == "status":
        return f"status {detail}"
    if kind == "bad-body":
        return f"bad body: {detail}"
    return kind.replace("-", " ")


def _from_wit(e: upstream.CallError) -> CallError:
    return CallError(_KINDS.get(type(e), "upstream-reset"), getattr(e, "value", None))


class Reply:
    """A reply from an upstream: any status (4xx/5xx are replies, not errors)."""

    def __init__(self, r: upstream.Reply) -> None:
        self.status: int = r.status
        self.headers: List[Header] = r.headers
        self.body: bytes = r.body

    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        n = name.lower()
        return next((v for k, v in self.headers if k.lower() == n), None)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises ``CallError('bad-body')`` if it is not."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise CallError("bad-body", str(e)) from None


class Result:
    """One :func:`fetch_all` result: ``ok`` with ``reply``, or not, with ``error``."""

    def __init__(self, reply: Optional[Reply] = None, error: Optional[CallError] = None) -> None:
        self.ok = error is None
        self.reply = reply
        self.error = error

    def ok_2xx(self) -> Reply:
        """The reply if it is a 2xx; raises the :class:`CallError` otherwise (``status N``
        for a non-2xx reply)."""
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        if not self.reply.is_success():
            raise CallError("status", self.reply.status)
        return self.reply


class Call:
    """One upstream call. The timeout is mandatory and is 1 s unless set (0 is
    ``invalid-call``). No headers and an empty body by default."""

    def __init__(self, method: str, cluster: str, path: str) -> None:
        self.cluster = cluster
        self.method = method
        self.path = path
        self.headers: List[Header] = []
        self.body = b""
        self.timeout_ms = 1000

    @staticmethod
    def get(cluster: str, path: str) -> "Call":
        return Call("GET", cluster, path)

    def timeout(self, ms: int) -> "Call":
        self.timeout_ms = ms
        return self

    def header(self, name: str, value: str) -> "Call":
        self.headers.append((name.lower(), str(value)))
        return self

    def with_body(self, body: Union[str, bytes]) -> "Call":
        self.body = body if isinstance(body, bytes) else body.encode("utf-8")
        return self

    def forward(self, req: types.Request, names: Sequence[str]) -> "Call":
        """Copies the named headers (if present) from the incoming request."""
        for n in names:
            self.headers.extend((k, v) for k, v in req.headers if k.lower() == n)
        return self

    def forward_context(self, req: types.Request) -> "Call":
        """:meth:`forward` with authorization, cookie, traceparent, tracestate, x-request-id."""
        return self.forward(req, CONTEXT_HEADERS)

    def _wit(self) -> upstream.Call:
        return upstream.Call(
            cluster=self.cluster, method=self.method, path=self.path,
            headers=self.headers, body=self.body, timeout_ms=self.timeout_ms,
        )


def fetch(call: Call) -> Reply:
    """Makes one call; returns a :class:`Reply` or raises :class:`CallError`."""
    try:
        return Reply(upstream.fetch(call._wit()))
    except Err as e:
        raise _from_wit(e.value) from None


def fetch_all(calls: Sequence[Call]) -> List[Result]:
    """Makes all calls concurrently on the host (at most the manifest's ``max_fanout``);
    results come back in order."""
    out: List[Result] = []
    for r in upstream.fetch_all([c._wit() for c in calls]):
        if isinstance(r, Ok):
            out.append(Result(reply=Reply(r.value)))
        else:
            out.append(Result(error=_from_wit(r.value)))
    return out


def json_response(status: int, value: Any) -> types.Response:
    """A JSON response with ``content-type: application/json``."""
    return types.Response(
        status=status,
        headers=[("content-type", "application/json")],
        body=json.dumps(value, separators=(",", ":")).encode("utf-8"),
    )
