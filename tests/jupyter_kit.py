"""Talking to a real Jupyter server in tests: a kernel round trip over its channels WebSocket."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from websockets.sync.client import connect
from websockets.typing import Subprotocol

WAIT = 30.0  # the longest one step (a kernel start, a message) may take


def ws_of(http_url: str) -> str:
    return "ws://" + http_url.removeprefix("http://")


def kernel_round_trip(base: str, headers: dict[str, str], subprotocols: list[str] | None = None) -> None:
    """Starts a kernel over HTTP, runs `1+1` over its channels WebSocket, expects `2`."""
    with httpx.Client(headers=headers, timeout=WAIT) as http:
        r = http.post(base + "api/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text
        kernel_id = r.json()["id"]
        try:
            ws_headers = {k: v for k, v in headers.items() if subprotocols is None}
            with connect(
                ws_of(base) + f"api/kernels/{kernel_id}/channels",
                additional_headers=ws_headers,
                subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
                open_timeout=WAIT,
                close_timeout=2,
            ) as ws:
                msg_id = uuid.uuid4().hex
                ws.send(json.dumps(execute_request(msg_id, "1+1")))
                deadline = time.monotonic() + WAIT
                for _ in range(1000):
                    left = deadline - time.monotonic()
                    assert left > 0, "no execute_result in time"
                    raw = ws.recv(timeout=left)
                    message = json.loads(raw)
                    if message.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    if message["msg_type"] == "execute_result":
                        assert message["content"]["data"]["text/plain"] == "2", message
                        return
                    assert message["msg_type"] != "error", message
                raise AssertionError("too many messages without an execute_result")
        finally:
            http.delete(base + f"api/kernels/{kernel_id}")


def execute_request(msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "2024-01-01T00:00:00Z",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
