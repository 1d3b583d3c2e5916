"""Kafka security passed through to the client: the test sets up a broker with a SASL_SSL
listener (SCRAM-SHA-512 over TLS, a CA and broker certificate made here), and the service
consumes and produces through it with the CA, user and password from its settings; a wrong
password is refused with a clear error; the password never shows in logs.

The broker is the project's local broker (deploy/kafka/local-kafka.sh) with an extra listener,
its own temp dir and ports, so the session's broker is untouched."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kafka import KafkaProducer

from service.kafka_io import ensure_topics, login_refusal
from service.local_broker import EXTERNAL_ENV, LocalBroker
from service.settings import Settings
from tests.integration.kit import committed_total, consume_all, fresh_settings, wait_until

USER = "outrider-svc"
PASSWORD = "Sc-7rQ2-only-for-this-test-x9"  # distinctive, so a leak is found by grep
MECHANISM = "SCRAM-SHA-512"


class SecureBroker(NamedTuple):
    plaintext: str  # the test's own back door, for checks only
    sasl_ssl: str  # what the service is given
    cafile: Path


def _write_pki(folder: Path) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1 / localhost; returns (ca.pem, broker.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outrider test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, broker_path = folder / "ca.pem", folder / "broker.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    # Kafka's PEM key store: the unencrypted PKCS#8 key, then the certificate chain
    broker_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    broker_path.chmod(0o600)
    return ca_path, broker_path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if os.environ.get(EXTERNAL_ENV):
        pytest.skip("sets up a SASL_SSL broker of its own; not with an external cluster")
    if (
        shutil.which("java") is None
        and not os.environ.get("JAVA_HOME")
        and not os.environ.get("CI")
    ):
        pytest.skip("no Java to run a local Kafka broker")
    folder = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore = _write_pki(folder)
    props = folder / "sasl_ssl.properties"
    props.write_text(
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={keystore}\n"
        f"sasl.enabled.mechanisms={MECHANISM}\n"
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
    )
    broker = LocalBroker(
        folder / "broker",
        extra_listener="SASL_SSL",
        extra_props=props,
        format_args=["--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]"],
    )
    plaintext = broker.start()
    try:
        yield SecureBroker(plaintext, broker.listeners()["SASL_SSL"], ca)
    finally:
        broker.stop()


def _serve_env(broker: SecureBroker, state: Path, password: str, **settings: str) -> dict[str, str]:
    """The environment an operator gives `outrider serve`: the password only as a variable
    (never a flag, which `ps` shows)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTRIDER_")}
    env.update(
        OUTRIDER_KAFKA_BOOTSTRAP=broker.sasl_ssl,
        OUTRIDER_SECURITY_PROTOCOL="SASL_SSL",
        OUTRIDER_SASL_MECHANISM=MECHANISM,
        OUTRIDER_SASL_USERNAME=USER,
        OUTRIDER_SASL_PASSWORD=password,
        OUTRIDER_SSL_CAFILE=str(broker.cafile),
        OUTRIDER_STATE_DIR=str(state),
        OUTRIDER_METRICS_PORT="0",
        OUTRIDER_LOG_LEVEL="DEBUG",  # the most an operator can turn up
    )
    env.update({f"OUTRIDER_{k.upper()}": v for k, v in settings.items()})
    return env


def _settings(broker: SecureBroker, state: Path, password: str, **extra: str) -> Settings:
    """What an embedding application gives the pipeline to reach the SASL_SSL listener."""
    return Settings(
        kafka_bootstrap=broker.sasl_ssl,
        security_protocol="SASL_SSL",
        sasl_mechanism=MECHANISM,
        sasl_username=USER,
        sasl_password=password,
        ssl_cafile=broker.cafile,
        state_dir=state,
        **extra,  # type: ignore[arg-type]
    )


def _events(n: int) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "kind": "ids_alert",
                "time": 1_700_000_000 + i,
                "entities": {"name": f"n{i % 5}", "short": "s", "ip": "10.0.0.1", "host": "h"},
            }
        )
        for i in range(n)
    ]


def test_service_consumes_and_produces_over_sasl_ssl(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    s = fresh_settings(
        secure_broker.sasl_ssl,  # the topics are created through the secured listener too
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism=MECHANISM,
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_cafile=secure_broker.cafile,
        calibration_min_samples=100,
    )
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert PASSWORD not in shown, "settings never show the password"
    producer = KafkaProducer(acks="all", **s.kafka_client_config())
    try:
        for v in _events(1000):
            producer.send(s.events_topic, v)
        producer.flush(timeout=60)
    finally:
        producer.close()

    log = tmp_path / "serve.log"
    topics = {
        name: getattr(s, name)
        for name in (
            "events_topic",
            "alerts_topic",
            "scores_topic",
            "dead_letter_topic",
            "feedback_topic",
            "models_topic",
            "group_id",
        )
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--calibration-min-samples", "100"],
        env=_serve_env(secure_broker, tmp_path / "state", PASSWORD, **topics),
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until(
            lambda: committed_total(secure_broker.plaintext, s.group_id, s.events_topic) == 1000,
            120,
        ), log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text()[-3000:]
    scored = consume_all(secure_broker.plaintext, s.scores_topic, 1000, timeout_s=60)
    assert len(scored) == 1000, "every event scored and published over SASL_SSL"
    output = log.read_text()
    assert "scoring" in output, "the service's own DEBUG/INFO log was captured"
    assert PASSWORD not in output, "the password never appears in the service's logs"


def test_wrong_password_is_refused_clearly_and_never_logged(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    wrong = "Wr0ng-pass-for-this-test-q4"
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env=_serve_env(
            secure_broker,
            tmp_path / "state",
            wrong,
            events_topic="secure-wrong-events",
            startup_timeout_s="15",
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the service must not run without a valid login"
    assert wrong not in output and PASSWORD not in output, "no password in the logs"
    # the broker's own reason, every run (librdkafka is asked when kafka-python misses it)
    assert "refused the login" in output and "Authentication failed" in output, output[-600:]
    assert "invalid credentials" in output


def test_a_refused_login_is_told_apart_from_an_unreachable_broker(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    refusal = login_refusal(_settings(secure_broker, tmp_path, "Wr0ng-pass-for-this-test-q4"))
    assert refusal is not None and "invalid credentials" in refusal, refusal
    assert login_refusal(_settings(secure_broker, tmp_path, PASSWORD)) is None, "not refused"


def test_password_stays_out_of_debug_logs_when_embedded(
    secure_broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # an embedding application's logging, every library
    s = _settings(secure_broker, tmp_path, PASSWORD, events_topic=f"secure-embedded-{os.getpid()}")
    ensure_topics(s)  # the admin client: the first Kafka client the pipeline creates
    leaks = [
        f"{r.name}:{r.levelname}: {r.getMessage()[:120]}"
        for r in caplog.records
        if PASSWORD in r.getMessage()
    ]
    assert not leaks, leaks
