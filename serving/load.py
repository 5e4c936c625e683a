"""Closed-loop load: client threads on keep-alive connections, each posting its next request when
the last answer arrives, every answer checked.

Used by the soak, the benchmarks and the serving tests; docs/benchmarks.md.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

JSON_TYPE = "application/json"
REQUEST_TIMEOUT_S = 120.0
# A kept-alive connection the server has closed while idle fails its next request with one of
# these before any answer: sent once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Connection:
    """One keep-alive HTTP/1.1 connection to an endpoint (``http.client``: little client CPU)."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        """
        Args:
            url: The endpoint, ``http://127.0.0.1:<port>/<path>``.
            timeout: Socket timeout in seconds.
        """
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"expected an http://host:port/path URL, got {url!r}")
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(
        self, body: bytes, content_type: str = JSON_TYPE, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST ``body`` (`exchange`).

        Returns:
            The status and the whole answer body.
        """
        status, _, answer = self.exchange(body, content_type, headers)
        return status, answer

    def exchange(
        self, body: bytes, content_type: str = JSON_TYPE, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``body``; reconnects and sends it once more if the server had closed the idle
        connection.

        Returns:
            The status, the answer's headers (lower-case names) and its whole body.

        Raises:
            OSError, http.client.HTTPException: If it gets no answer.
        """
        for attempt in (0, 1):
            reused = self._conn is not None
            connection = self._conn or http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
            self._conn = connection
            try:
                connection.request(
                    "POST", self.path, body, {"Content-Type": content_type, **(headers or {})}
                )
                response = connection.getresponse()
                answer = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt or not reused or not isinstance(e, _STALE):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the socket (a later `post` reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Request:
    """A body to send, and what its answer is checked against."""

    data: bytes
    content_type: str = JSON_TYPE
    note: str = ""  # named in its error lines (``q=100 full``)
    expected: Any = None  # for ``check``


@dataclass(frozen=True)
class Answer:
    """A server's answer to one request of client ``client``."""

    status: int
    body: bytes
    client: int
    elapsed: float  # seconds from sending to the whole answer read
    arrived: float  # time.monotonic() then

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


Body = bytes | Request
# The reason an answer (HTTP 200) is wrong, or None.
Check = Callable[[Answer, Request], str | None]


@dataclass
class LoadResult:
    """What a load run saw.

    Attributes:
        latencies: Seconds per accepted answer that arrived inside the window.
        statuses: HTTP status -> answers (all of them).
        errors: One line per failed request: no answer, not HTTP 200, or refused by ``check``.
        seconds: The window, or the wall time where the clients stopped first.
    """

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        """The requests counted: accepted inside the window, and every failure."""
        return len(self.latencies) + len(self.errors)

    @property
    def rate(self) -> float:
        """Accepted answers per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The latency at or above ``p`` percent of the others (0.0 if none)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    @classmethod
    def merge(cls, results: Iterable[LoadResult]) -> LoadResult:
        """The runs of several processes over the same window, as one."""
        merged = cls()
        for result in results:
            merged.latencies += result.latencies
            merged.statuses += result.statuses
            merged.errors += result.errors
            merged.seconds = max(merged.seconds, result.seconds)
        return merged


def closed_loop(
    url: str,
    bodies: Sequence[Body] | Callable[[int], Iterable[Body]],
    clients: int,
    seconds: float | None = None,
    check: Check | None = None,
    *,
    requests: int | None = None,
    stop: threading.Event | None = None,
    headers: Mapping[str, str] | None = None,
    pause_s: float = 0.0,
    start_at: float | None = None,
    warm_up: bool = False,
    timeout: float = REQUEST_TIMEOUT_S,
) -> LoadResult:
    """``clients`` threads, each on its own keep-alive connection, sending its next request to
    ``url`` when the last answer arrives; returns when all have stopped.

    A client stops when the window ends, ``stop`` is set, it has sent ``requests`` or its
    bodies run out, and finishes the request in flight. Answers that arrive after the window
    are still checked, but not timed.

    Args:
        url: The endpoint (``server.predict_url``).
        bodies: A sequence, which client ``k`` cycles through from ``k * len // clients``;
            or ``bodies(k)``, client ``k``'s own iterable. Each a `Request` or the bytes of
            a JSON one.
        clients: Concurrent clients (threads).
        seconds: The window's length (None: no window).
        check: Called on each HTTP 200 answer: why it is wrong, or None.
        requests: At most this many requests per client.
        stop: Set to stop every client.
        headers: Sent with every request (an ``Authorization``), besides its Content-Type.
        pause_s: Seconds a client waits before each request.
        start_at: When the window opens (``time.monotonic()``; default: now): several
            processes' clients start together.
        warm_up: Each client first sends one request untimed and unchecked (its connection
            opens outside the window).
        timeout: A request's socket timeout in seconds.
    """
    if seconds is None and requests is None and stop is None and not callable(bodies):
        raise ValueError("closed_loop: expected seconds, requests or stop: it would not end")
    stop = stop or threading.Event()
    start = time.monotonic() if start_at is None else start_at
    deadline = math.inf if seconds is None else start + seconds
    result, lock = LoadResult(), threading.Lock()
    ends: list[float] = []

    def client(index: int) -> None:
        connection = Connection(url, timeout)
        stream = _stream(bodies, index, clients)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: list[str] = []
        try:
            first = next(stream, None) if warm_up else None
            if first is not None:
                stream = itertools.chain([first], stream)
                try:
                    connection.post(first.data, first.content_type, headers)
                except (OSError, http.client.HTTPException):
                    connection.close()
            time.sleep(max(0.0, start - time.monotonic()))
            for _ in range(requests) if requests is not None else itertools.count():
                if (
                    stop.wait(pause_s) if pause_s else stop.is_set()
                ) or time.monotonic() >= deadline:
                    break
                request = next(stream, None)
                if request is None:
                    break
                started = time.monotonic()
                problem: str | None
                try:
                    status, body = connection.post(request.data, request.content_type, headers)
                except (OSError, http.client.HTTPException) as e:
                    connection.close()
                    problem = f"{type(e).__name__}: {e}"
                else:
                    arrived = time.monotonic()
                    answer = Answer(status, body, index, arrived - started, arrived)
                    statuses[status] += 1
                    problem = (
                        f"HTTP {status}: {answer.text[:200]}"
                        if status != 200
                        else _checked(check, answer, request)
                    )
                    if problem is None and answer.arrived <= deadline:
                        latencies.append(answer.elapsed)
                if problem is not None:
                    errors.append(
                        f"client {index}{', ' + request.note if request.note else ''}"
                        f", after {time.monotonic() - started:.1f}s: {problem}"
                    )
        finally:
            connection.close()
            with lock:
                result.latencies += latencies
                result.statuses += statuses
                result.errors += errors
                ends.append(time.monotonic())

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = max(0.0, min(max(ends, default=start), deadline) - start)
    return result


def _stream(
    bodies: Sequence[Body] | Callable[[int], Iterable[Body]], index: int, clients: int
) -> Iterator[Request]:
    """Client ``index``'s requests (`closed_loop`'s ``bodies``)."""
    if callable(bodies):
        items: Iterable[Body] = bodies(index)
    else:
        offset = index * len(bodies) // clients
        items = (bodies[(offset + i) % len(bodies)] for i in itertools.count())
    return (item if isinstance(item, Request) else Request(item) for item in items)


def _checked(check: Check | None, answer: Answer, request: Request) -> str | None:
    """``check``'s verdict; an exception it raises (an answer it cannot read) is one too."""
    if check is None:
        return None
    try:
        return check(answer, request)
    except Exception as e:  # (any: the answer is wrong, the client goes on)
        return f"{type(e).__name__}: {e}"
