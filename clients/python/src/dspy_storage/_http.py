"""HTTP: one connection pool per client, authentication (Bearer or SigV4), retries, errors."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import httpx

from ._errors import StorageError, Unauthenticated, Unavailable, from_answer

log = logging.getLogger("dspy_storage")

#: Statuses a request is retried on (when it may be repeated): throttled, gateway and backend failures.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def segment(value: str) -> str:
    """A path segment, percent-encoded (names may hold ``:`` and ``.``)."""
    return quote(str(value), safe="")


def query_string(params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> str:
    """``k=v&...`` with RFC 3986 encoding (what SigV4 canonicalizes), ``None`` values left out."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    parts = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        parts.append(f"{quote(str(k), safe='-_.~')}={quote(str(v), safe='-_.~')}")
    return "&".join(parts)


class SigV4Signer:
    """Signs requests for API Gateway (`execute-api`) with botocore's credential chain and region."""

    def __init__(self, region: str | None = None, service: str = "execute-api") -> None:
        try:
            import botocore.session
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ImportError(
                "aws_iam=True needs botocore: pip install 'dspy-storage[aws]'"
            ) from e
        self._auth_cls = SigV4Auth
        self._request_cls = AWSRequest
        session = botocore.session.get_session()
        self._credentials = session.get_credentials()
        self.region = (
            region
            or session.get_config_variable("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        self.service = service
        if self._credentials is None:
            raise Unauthenticated("aws_iam=True but botocore found no AWS credentials")
        if not self.region:
            raise Unauthenticated("aws_iam=True but no AWS region is configured (AWS_REGION)")

    def headers(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """The headers to send: ``headers`` plus ``X-Amz-Date``, ``Authorization`` (and the
        session token when the credentials have one)."""
        request = self._request_cls(method=method, url=url, data=body, headers=dict(headers))
        self._auth_cls(
            self._credentials.get_frozen_credentials(), self.service, self.region
        ).add_auth(request)
        return dict(request.headers.items())


class Http:
    """The client's transport: ``retries`` retries with jittered exponential backoff for requests
    that may be repeated (reads, idempotent writes); a request that may not is retried only when
    it never reached the server (the connection failed)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        signer: SigV4Signer | None,
        timeout: float,
        retries: int,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        from . import __version__

        self.base = url.rstrip("/")
        self.token = token
        self.signer = signer
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        if transport is None and self.base.startswith("http://"):
            # Plain HTTP never does TLS: skip loading the CA bundle (most of a client's start-up).
            # Redirects are not followed, so no request can move to https with this transport.
            transport = httpx.HTTPTransport(verify=False)
        self._client_args = dict(
            timeout=timeout,
            transport=transport,
            headers={"user-agent": f"dspy-storage-python/{__version__}"},
        )
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """The connection pool, made on the first request (for https, loading the CA bundle
        costs ~25 ms: a load answered from the cache never pays it)."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(**self._client_args)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _sleep(self, attempt: int, answer: httpx.Response | None) -> None:
        delay = random.uniform(0, min(self.max_backoff, self.backoff * (2**attempt)))
        if answer is not None:
            try:
                delay = max(delay, min(float(answer.headers.get("retry-after", 0)), 30.0))
            except ValueError:
                pass
        time.sleep(delay)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
    ) -> httpx.Response:
        """Sends a request and returns a 2xx/304 answer; raises the API's error otherwise."""
        qs = query_string(params)
        url = self.base + path + (f"?{qs}" if qs else "")
        if body is not None:
            content = json.dumps(body, default=_json_default).encode()
        send_headers: dict[str, str] = dict(headers or {})
        if content is not None:
            send_headers.setdefault("content-type", "application/json")
        if self.token:
            send_headers["authorization"] = f"Bearer {self.token}"
        attempt = 0
        while True:
            h = send_headers
            if self.signer is not None:
                h = self.signer.headers(method, url, send_headers, content or b"")
            answer: httpx.Response | None = None
            try:
                answer = self.client.request(method, url, headers=h, content=content)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # Never reached the server: any request may be sent again.
                error: StorageError = Unavailable(f"cannot reach {self.base}: {e}")
                retry = True
            except httpx.TransportError as e:
                # Sent, answer lost: only a repeatable request may be sent again.
                error = Unavailable(f"no answer from {self.base} ({type(e).__name__}: {e})")
                retry = idempotent
            else:
                if answer.status_code < 400:
                    return answer
                error = from_answer(answer.status_code, _json_or_text(answer))
                retry = idempotent and answer.status_code in RETRY_STATUSES
            if not retry or attempt >= self.retries:
                raise error
            log.debug("retrying %s %s after %s (attempt %d)", method, path, error, attempt + 1)
            self._sleep(attempt, answer)
            attempt += 1

    def json(self, method: str, path: str, **kw: Any) -> Any:
        answer = self.request(method, path, **kw)
        if answer.status_code == 204 or not answer.content:
            return None
        return answer.json()


def _json_or_text(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.text


def _json_default(value: Any) -> Any:
    import datetime as dt
    import enum

    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
