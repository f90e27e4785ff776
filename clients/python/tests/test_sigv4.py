"""``aws_iam=True``: the SigV4 signature a local test server recomputes from the test credentials
(independently of botocore: the algorithm of AWS's documentation) equals the one sent."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from dspy_storage import ProgramStorage

ACCESS, SECRET, TOKEN, REGION = "AKIDEXAMPLETEST", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTKEY", "session-tok", "eu-west-3"


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(signature the request should carry, the Authorization header it carries)."""
    auth = headers["authorization"]
    algo, rest = auth.split(" ", 1)
    assert algo == "AWS4-HMAC-SHA256"
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    access, date, region, service, term = parts["Credential"].split("/")
    assert (access, region, service, term) == (ACCESS, REGION, "execute-api", "aws4_request")
    signed = parts["SignedHeaders"].split(";")
    assert "host" in signed and "x-amz-date" in signed
    path, _, query = raw_path.partition("?")
    # Canonical URI: each segment URI-encoded (again: non-S3 services encode twice).
    canonical_uri = "/".join(quote(seg, safe="-_.~") for seg in path.split("/")) or "/"
    pairs = sorted(tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p)
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed)
    canonical = "\n".join([method, canonical_uri, canonical_query, canonical_headers,
                           ";".join(signed), hashlib.sha256(body).hexdigest()])
    amz_date = headers["x-amz-date"]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = _sign(("AWS4" + SECRET).encode(), date)
    for part in (region, service, "aws4_request"):
        k = _sign(k, part)
    return hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), parts["Signature"]


@pytest.fixture
def verifying_server():
    checked: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            want, got = expected_signature(self.command, self.path, headers, body)
            checked.append({"path": self.path, "equal": want == got, "token": headers.get("x-amz-security-token")})
            status = 200 if want == got else 403
            out = json.dumps({"status": "ok", "results": [], "next_cursor": None} if status == 200
                             else {"error": {"code": "forbidden", "message": "signature mismatch"}}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", checked
    httpd.shutdown()


def test_sigv4_signature_is_recomputed_equal(verifying_server, monkeypatch, tmp_path: Path) -> None:
    url, checked = verifying_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with ProgramStorage(url, aws_iam=True, cache_dir=tmp_path) as s:
        assert s.health()["status"] == "ok"
        # A query with spaces, colons and wildcards; a POST with a body.
        assert list(s.search('version:1.* method:miprov2 "two words"', sort="-performance")) == []
        assert list(s.search({"signature": "qa.Answer", "performance": {"gte": 0.8}})) == []
    assert [c["equal"] for c in checked] == [True, True, True]
    assert all(c["token"] == TOKEN for c in checked)
    # And a wrong secret is caught by the same check (the test can fail).
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with ProgramStorage(url, aws_iam=True, cache_dir=tmp_path) as s:
        with pytest.raises(Exception):
            s.health()
    assert checked[-1]["equal"] is False
