"""OTLP over TLS: wharf exports its spans to a real receiver behind TLS, over OTLP/HTTP and
OTLP/gRPC, verifying it with a CA made in the test (OTEL_EXPORTER_OTLP_CERTIFICATE), with
optional client certificates and the auth headers of OTEL_EXPORTER_OTLP_(TRACES_)HEADERS. A
collector it cannot trust or reach costs neither the server nor a request anything: one warning,
and the lost spans counted in wharf_otel_spans_failed_total."""

from __future__ import annotations

import ssl
import time

import grpc
import pytest
import requests
import trustme
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for
from otlp_receiver import GrpcOtlpReceiver, OtlpReceiver

PROTOCOLS = ["http/protobuf", "grpc"]


@pytest.fixture
def ca():
    return trustme.CA()


@pytest.fixture
def files(tmp_path, ca):
    """PEM files: the CA, a client certificate it issued, and a CA that issued nothing here."""
    paths = {"ca": tmp_path / "ca.pem", "other_ca": tmp_path / "other-ca.pem", "client": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    client = ca.issue_cert("wharf-client")
    client.cert_chain_pems[0].write_to_path(str(paths["client"]))
    paths["client_key"] = tmp_path / "client.key"
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return paths


def tls_receiver(protocol: str, ca: trustme.CA, require_client_cert: bool = False):
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    if protocol == "grpc":
        key = server_cert.private_key_pem.bytes()
        chain = b"".join(pem.bytes() for pem in server_cert.cert_chain_pems)
        credentials = grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=ca.cert_pem.bytes() if require_client_cert else None,
            require_client_auth=require_client_cert,
        )
        return GrpcOtlpReceiver(credentials)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(context)
    if require_client_cert:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return OtlpReceiver(tls=context)


def env_for(receiver, protocol: str, ca_file, **extra: str) -> dict:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_file),
        "OTEL_SERVICE_NAME": "wharf-tls-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    env.update(extra)
    return env


def metric(admin: int, name: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_reach_a_tls_collector_with_the_auth_headers(wharf, ca, files, protocol):
    with tls_receiver(protocol, ca) as receiver:
        env = env_for(
            receiver,
            protocol,
            files["ca"],
            OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20s3cret,X-Tenant=general",
            OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-tenant=traces",
        )
        assert receiver.endpoint.startswith("https://")
        server = wharf("otel_app:plain", env=env)
        assert requests.get(f"{server.url}/tls", timeout=10).status_code == 200

        spans = receiver.wait_for(lambda s: s.scope == "wharf" and s.attributes.get("url.path") == "/tls")
        assert len(spans) == 1
        assert spans[0].service_name == "wharf-tls-test"
        assert spans[0].kind == "SPAN_KIND_SERVER"
        headers = receiver.requests[0]["headers"]
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["x-tenant"] == "traces", "the traces variable wins over the general one"
        if protocol == "http/protobuf":
            assert receiver.requests[0]["content_type"] == "application/x-protobuf"
            assert receiver.requests[0]["path"] == "/v1/traces"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_certificates_for_mutual_tls(wharf, ca, files, protocol):
    with tls_receiver(protocol, ca, require_client_cert=True) as receiver:
        env = env_for(
            receiver,
            protocol,
            files["ca"],
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=str(files["client"]),
            OTEL_EXPORTER_OTLP_CLIENT_KEY=str(files["client_key"]),
        )
        server = wharf("otel_app:plain", env=env)
        requests.get(f"{server.url}/mtls", timeout=10)
        receiver.wait_for(lambda s: s.scope == "wharf" and s.attributes.get("url.path") == "/mtls")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_untrusted_collector_is_one_warning_and_counted_never_a_slow_request(wharf, ca, files, protocol):
    with tls_receiver(protocol, ca) as receiver:
        admin = free_port()
        env = env_for(receiver, protocol, files["other_ca"], OTEL_BSP_SCHEDULE_DELAY="10")
        server = wharf("otel_app:plain", "--admin-bind", f"127.0.0.1:{admin}", env=env)
        slowest = 0.0
        for i in range(30):
            started = time.monotonic()
            assert requests.get(f"{server.url}/r{i}", timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            # Several batches, so the warning is seen to be rate-limited.
            if i % 10 == 9:
                wait_for(lambda n=i: (metric(admin, "wharf_otel_spans_failed_total") or 0) >= n + 1, timeout=15)
        assert slowest < 1.0, f"a request took {slowest:.3f}s while exports fail"
        assert metric(admin, "wharf_otel_spans_failed_total") == 30
        assert metric(admin, "wharf_otel_spans_dropped_total") == 0
        assert receiver.spans == []
        warnings = [line for line in server.log().splitlines() if "exporting spans failed" in line]
        assert len(warnings) == 1, server.log()
        assert "certificate" in warnings[0].lower() or "unknownissuer" in warnings[0].lower(), warnings[0]
        assert server.proc.poll() is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "127.0.0.1:4318"}, "invalid endpoint"),
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ],
)
def test_a_bad_endpoint_or_certificate_file_warns_and_serves(wharf, extra, reason):
    admin = free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "10", **extra}
    server = wharf("otel_app:plain", "--admin-bind", f"127.0.0.1:{admin}", env=env)
    for i in range(3):
        assert requests.get(f"{server.url}/r{i}", timeout=10).status_code == 200
    wait_for(lambda: metric(admin, "wharf_otel_spans_failed_total") == 3, timeout=15)
    warnings = [line for line in server.log().splitlines() if "exporting spans failed" in line]
    assert len(warnings) == 1 and reason in warnings[0], server.log()
