"""Zipkin's settings for the local stack: one listener on loopback, on a port clear of the stack's and
moved by the port offset; in-memory storage; nothing of the stack's environment passed on; one version
pin names the cached jar."""

from __future__ import annotations

from pathlib import Path

from localstack.zipkin import ZIPKIN_VERSION, ZipkinServer, jar_path, server_command, server_environment

STACK_PORTS = range(8080, 8141)  # functions, broker ingress, dispatcher metrics (docs/local-stack.md)
INFRA_PORTS = {55432, 19092, 19093}  # PostgreSQL, Kafka, its controller
JAR = Path("/repo/.local/zipkin/zipkin-server.jar")


def armeria_ports(command: list[str]) -> dict[str, str]:
    """The `--armeria.ports[...]` settings of a command line, by their name after the prefix."""
    prefix = "--armeria.ports["
    return dict(arg[len(prefix):].split("=", 1) for arg in command if arg.startswith(prefix))


def test_one_http_listener_bound_to_loopback_only() -> None:
    # Index 0 only: a second entry would be a second listener.
    assert armeria_ports(server_command(JAR, 9411)) == {
        "0].ip": "127.0.0.1", "0].port": "9411", "0].protocols[0]": "http",
    }


def test_default_port_avoids_the_stack_and_infrastructure_ports() -> None:
    port = ZipkinServer(Path("/repo"), Path("/repo/.local/dev")).port
    assert port == 9411
    assert port not in set(STACK_PORTS) | INFRA_PORTS
    assert port < 32768  # below Linux's ephemeral range


def test_port_offset_moves_the_listener_and_every_url() -> None:
    zipkin = ZipkinServer(Path("/repo"), Path("/repo/.local/test"), port_offset=10000)
    assert armeria_ports(server_command(JAR, zipkin.port))["0].port"] == "19411"
    assert zipkin.spans_endpoint == "http://127.0.0.1:19411/api/v2/spans"
    assert zipkin.ui_url == "http://127.0.0.1:19411/zipkin/"
    assert zipkin.trace_url_template.format(traceId="ab" * 16) == f"http://127.0.0.1:19411/zipkin/traces/{'ab' * 16}"


def test_heap_is_bounded_and_the_jar_runs_directly() -> None:
    command = server_command(JAR, 9411)
    assert command[0] == "java"
    assert "-Xmx256m" in command
    assert command[command.index("-jar") + 1] == str(JAR)


def test_environment_is_in_memory_storage_without_self_tracing() -> None:
    env = server_environment({"PATH": "/usr/bin"})
    assert env["STORAGE_TYPE"] == "mem"
    assert env["SELF_TRACING_ENABLED"] == "false"
    assert int(env["MEM_MAX_SPANS"]) > 0
    assert env["PATH"] == "/usr/bin"


def test_stack_settings_zipkin_would_act_on_are_not_passed_on() -> None:
    # Zipkin reads these plain names: with them it would consume our Kafka or store elsewhere.
    inherited = {"PATH": "/usr/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092", "RABBIT_URI": "amqp://x",
                 "ES_HOSTS": "http://es:9200", "QUERY_PORT": "8080", "STORAGE_TYPE": "cassandra3"}
    env = server_environment(inherited)
    assert not {"KAFKA_BOOTSTRAP_SERVERS", "RABBIT_URI", "ES_HOSTS", "QUERY_PORT"} & env.keys()
    assert env["STORAGE_TYPE"] == "mem"


def test_cached_jar_is_named_by_the_pinned_version() -> None:
    assert jar_path(Path("/repo")) == Path(f"/repo/.local/zipkin/zipkin-server-{ZIPKIN_VERSION}-exec.jar")
