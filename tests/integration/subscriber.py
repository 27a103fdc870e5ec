"""An HTTP subscriber on 127.0.0.1 standing in for a Trigger's function: it records every CloudEvent
delivered to it and answers through a callback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.http import CloudEvent, from_http

Answer = tuple[int, dict[str, str], bytes]


class Subscriber:
    """An HTTP subscriber on 127.0.0.1 that records each delivery and answers through `respond`."""

    def __init__(self, respond: Callable[[CloudEvent, int], Answer]) -> None:
        self.deliveries: list[CloudEvent] = []
        self.lock = threading.Lock()
        self.at_once = 0
        self.most_at_once = 0  # the most deliveries in progress at the same time
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = from_http(dict(self.headers), body)
                with subscriber.lock:
                    subscriber.deliveries.append(event)
                    attempt = sum(1 for e in subscriber.deliveries if e["id"] == event["id"])
                    subscriber.at_once += 1
                    subscriber.most_at_once = max(subscriber.most_at_once, subscriber.at_once)
                try:
                    status, headers, answer = respond(event, attempt)
                finally:
                    with subscriber.lock:
                        subscriber.at_once -= 1
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the dispatcher opens up to its in-flight window of connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self) -> list[str]:
        with self.lock:
            return [e["id"] for e in self.deliveries]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
