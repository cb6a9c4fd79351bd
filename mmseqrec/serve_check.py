"""Talking to ``mmseqrec serve`` from a script: start it on a free loopback port, a small JSON
client, and the malformed requests it must answer with a 4xx. Used by ``tests/test_serve.py``
and ``benchmarks/serve_load.py``; standard library only (``http.client``), so a check needs
nothing the service does not.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Client:
    """One keep-alive HTTP connection; ``call`` returns (status, parsed JSON or None, raw body)."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 60.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | dict | list | None = None, headers: dict | None = None) -> tuple[int, object, bytes]:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"content-type": "application/json", **(headers or {})}
        for attempt in range(2):  # the server may close an idle keep-alive connection
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if response.getheader("connection", "").lower() == "close":
            self.close()
        return response.status, parsed, raw

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class ServerProcess:
    """``mmseqrec serve ARGS`` in a subprocess on a free loopback port, up once /health answers;
    stopped (SIGINT, then SIGKILL) on exit. ``python -m mmseqrec.cli`` runs this checkout's code."""

    def __init__(self, args: list[str], startup_seconds: float = 180.0, log: Path | None = None):
        self.port = free_port()
        self.args = [sys.executable, "-m", "mmseqrec.cli", "serve", *args, "--host", LOOPBACK, "--port", str(self.port), "--log-level", "warning"]
        self.startup_seconds = startup_seconds
        self.log = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        output = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(self.args, stdout=output, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode} before answering (log: {self.log})")
            try:
                if Client(self.port, timeout=5).call("GET", "/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise TimeoutError(f"the server did not answer /health within {self.startup_seconds:.0f} s (log: {self.log})")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class BadRequest:
    """A request the service must refuse with ``status`` and a JSON error message."""

    kind: str
    method: str
    path: str
    body: bytes | None
    headers: dict
    status: int


def malformed_requests(known_item: str, max_history: int, max_body: int = 1 << 20) -> list[BadRequest]:
    """Ten (and a few more) kinds of bad input, each with the 4xx it must get."""
    json_type = {"content-type": "application/json"}

    def post(kind: str, payload, status: int, path: str = "/recommend") -> BadRequest:
        return BadRequest(kind, "POST", path, json.dumps(payload).encode(), json_type, status)

    return [
        BadRequest("malformed JSON", "POST", "/recommend", b'{"history": ["' + known_item.encode() + b'", ', json_type, 400),
        BadRequest("not UTF-8", "POST", "/recommend", b'{"history": ["\xff\xfe"]}', json_type, 400),
        BadRequest("wrong content type", "POST", "/recommend", json.dumps({"history": [known_item]}).encode(), {"content-type": "text/plain"}, 415),
        post("missing history", {"k": 5}, 422),
        post("history not a list", {"history": known_item}, 422),
        post("history of numbers", {"history": [1, 2]}, 422),
        post("empty history", {"history": []}, 422),
        post("history over the limit", {"history": [known_item] * (max_history + 1)}, 422),
        post("unknown item ids", {"history": [known_item, "no-such-item-1", "no-such-item-2"]}, 422),
        post("k = 0", {"history": [known_item], "k": 0}, 422),
        post("k not an integer", {"history": [known_item], "k": "ten"}, 422),
        post("k a float", {"history": [known_item], "k": 2.5}, 422),
        post("exclude_seen not a boolean", {"history": [known_item], "exclude_seen": "yes"}, 422),
        post("unknown field", {"history": [known_item], "user": "u1"}, 422),
        post("body not an object", [known_item], 422),
        post("items without ids", {"items": [{"text": "no id"}]}, 422, path="/items"),
        BadRequest("body too large", "POST", "/recommend", b"{" + b" " * (max_body + 1) + b"}", json_type, 413),
        BadRequest("unknown route", "GET", "/no-such-route", None, {}, 404),
        BadRequest("wrong method", "GET", "/recommend", None, {}, 405),
        BadRequest("wrong method on health", "POST", "/health", b"{}", json_type, 405),
    ]


def check_refused(client: Client, bad: BadRequest) -> str | None:
    """None if the service refused ``bad`` as it must (its status, a JSON error message), else
    what went wrong."""
    status, body, raw = client.call(bad.method, bad.path, bad.body, bad.headers)
    if status != bad.status:
        return f"{bad.kind}: status {status}, expected {bad.status} ({raw[:200]!r})"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"{bad.kind}: no JSON error message ({raw[:200]!r})"
    return None
