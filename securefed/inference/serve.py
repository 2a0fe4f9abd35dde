"""`securefed serve`: a model behind the OpenAI chat-completions route, for any OpenAI client.

  GET  /v1/models               -> the one model served
  POST /v1/chat/completions     -> {"model", "messages", "max_tokens"?, "temperature"?, "top_p"?, "seed"?,
                                    "stream"?}: a chat.completion (or server-sent chunks with "stream")

A small threaded HTTP server from the standard library; requests are answered one generation at a time
(one model, one lock); a request's max_tokens is capped at the server's. Bad requests get a 400 with an OpenAI-style error body, never a dead server.
It listens on 127.0.0.1 unless told otherwise: it has no authentication.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from securefed.inference.generate import generate_reply
from securefed.inference.load import Loaded

MAX_BODY = 1 << 20  # 1 MiB of JSON is far beyond any chat request
ROLES = ("system", "user", "assistant")


class BadRequest(ValueError):
    pass


def parse_request(body: bytes, default_max_tokens: int) -> dict[str, Any]:
    """The generation arguments of a chat-completions request; BadRequest naming the bad field. The
    server's max_tokens is the default and the cap: a larger request is cut (finish_reason "length")."""
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("request body is not JSON") from None
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}] needs a role ({', '.join(ROLES)}) and a string content")
    out = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "stream": bool(req.get("stream"))}
    for key, kind, lo, hi, default in (("max_tokens", int, 1, 8192, default_max_tokens),
                                       ("temperature", (int, float), 0, 2, 0.0), ("top_p", (int, float), 0, 1, 1.0)):
        value = req.get(key, req.get("max_completion_tokens") if key == "max_tokens" else None)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
            raise BadRequest(f"'{key}' must be a number in [{lo}, {hi}]")
        out[key] = min(value, default_max_tokens) if key == "max_tokens" else value
    seed = req.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer")
    out["seed"] = seed
    return out


def make_server(loaded: Loaded, name: str, host: str = "127.0.0.1", port: int = 0,
                max_tokens: int = 256) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; port 0 picks a free one (server.server_address)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # one quiet line per request
            pass

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "securefed"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._error(400 if length <= 0 else 413, "request body missing or larger than 1 MiB")
                return
            try:
                req = parse_request(self.rfile.read(length), max_tokens)
            except BadRequest as e:
                self._error(400, str(e))
                return
            ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
            if req["stream"]:
                self._stream(req, ident, created)
                return
            with lock:
                text, n = generate_reply(loaded.model, loaded.tokenizer, req["messages"], max_new_tokens=req["max_tokens"],
                                         temperature=req["temperature"], top_p=req["top_p"], seed=req["seed"],
                                         device=loaded.device)
            self._json(200, {"id": ident, "object": "chat.completion", "created": created, "model": name,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "length" if n >= req["max_tokens"] else "stop"}],
                             "usage": {"completion_tokens": n}})

        def _stream(self, req: dict, ident: str, created: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def send(delta: dict, finish: str | None = None) -> None:
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            send({"role": "assistant"})
            with lock:
                _, n = generate_reply(loaded.model, loaded.tokenizer, req["messages"], max_new_tokens=req["max_tokens"],
                                      temperature=req["temperature"], top_p=req["top_p"], seed=req["seed"],
                                      on_text=lambda piece: send({"content": piece}), device=loaded.device)
            send({}, "length" if n >= req["max_tokens"] else "stop")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return ThreadingHTTPServer((host, port), Handler)
