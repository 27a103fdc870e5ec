"""The Zipkin of `saga dev --tracing` takes a span from the OpenTelemetry SDK's Zipkin JSON exporter, the
one every function uses under `--tracing`, serves it back through its API, and serves its own UI.

Always runs: the server's jar is an ordinary Maven download (about 135 MB, 20 s cold), cached under
`.local/zipkin/` as Kafka's jars are."""

from __future__ import annotations

import ipaddress
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from localstack import infra as local_infra
from localstack.process import wait_until
from localstack.zipkin import ZipkinServer

REPO = Path(__file__).resolve().parents[2]
PORT_OFFSET = 10000  # the tests' offset: apart from a `saga dev --tracing` on the default ports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def zipkin() -> Iterator[ZipkinServer]:
    root = local_infra.test_infra(REPO).root  # .local/test, or the shifted run's own
    with ZipkinServer(REPO, root, port_offset=PORT_OFFSET + local_infra.suite_port_shift()) as running:
        yield running


def test_span_exported_as_zipkin_json_is_found_by_its_trace_id(zipkin: ZipkinServer) -> None:
    service = f"zipkin-test-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Synchronous export: the span has reached Zipkin's collector when the `with` block ends.
    provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=zipkin.spans_endpoint)))
    with provider.get_tracer(__name__).start_as_current_span("reserve_goods") as span:
        span.set_attribute("saga.step", "reserve_goods")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    found: list[dict[str, Any]] = []

    def stored() -> bool:
        response = httpx.get(f"{zipkin.url}/api/v2/trace/{trace_id}", timeout=5)
        if response.status_code != 200:  # 404 until the collector has stored it
            return False
        found.extend(response.json())
        return True

    wait_until(stored, timeout=10, what=f"trace {trace_id} in Zipkin's API")
    (stored_span,) = found
    assert stored_span["traceId"] == trace_id
    assert stored_span["name"] == "reserve_goods"
    assert stored_span["localEndpoint"]["serviceName"] == service
    assert stored_span["tags"]["saga.step"] == "reserve_goods"


def test_ui_and_a_trace_page_are_served_by_the_server_itself(zipkin: ZipkinServer) -> None:
    with httpx.Client(timeout=10) as client:
        for page in (zipkin.ui_url, zipkin.trace_url_template.format(traceId="ab" * 16)):
            response = client.get(page)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert '<base href="/zipkin/"' in response.text
        # Its scripts and styles are the server's own paths, and the server has them: no CDN, nothing outside.
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', response.text)
        assert assets
        for asset in assets:
            assert asset.startswith("/zipkin/"), asset
            assert client.get(f"{zipkin.url}{asset}").status_code == 200


def test_one_port_on_loopback_is_all_that_listens(zipkin: ZipkinServer) -> None:
    assert zipkin.pid is not None, f"port {zipkin.port} was taken by another Zipkin: this test needs its own"
    ((address, port),) = listening_sockets(zipkin.pid)
    assert port == zipkin.port
    # Java listens on an IPv6 socket: 127.0.0.1 shows as ::ffff:127.0.0.1.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    assert (mapped or address) == ipaddress.ip_address("127.0.0.1")


def listening_sockets(pid: int) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The TCP addresses process `pid` listens on (from /proc: its socket inodes, found in the socket tables)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    address, port = local.split(":")
                    # The address is hex in 32-bit words of host (little-endian) order.
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                    sockets.add((ipaddress.ip_address(raw), int(port, 16)))
    return sockets
