"""Kafka security on a real broker: SASL/SCRAM-SHA-512, SASL/PLAIN, SASL_SSL and mutual TLS.

The test starts its own broker (deploy/kafka/broker.py) with a SCRAM user created when
the storage is formatted, a PLAIN user, and TLS listeners whose certificates it makes
here; the PLAINTEXT broker of ``broker.py run`` is not used.

    python deploy/kafka/broker.py run -- pytest -q tests/integration/test_kafka_security.py
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import ipaddress
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.kafka_security import KafkaAccessRefused
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from schemas.codec import decode_touchpoint
from schemas.models import Channel, Direction, TouchpointEvent
from schemas.topics import RULES, TOUCHPOINTS, Topic
from streams.kafka_security import client_options
from streams.rules_push import publish_bundle_text
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import REPO, WorkerProcess, settings_env

pytestmark = pytest.mark.integration

SCRAM_USER, SCRAM_PASSWORD = "warroom-worker", "scram-Pa55-word-7f3a"
PLAIN_USER, PLAIN_PASSWORD = "warroom-cli", "plain-Pa55-word-91c2"
WRONG_PASSWORD = "wrong-Pa55-word-0b1d"


def _broker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("warroom_broker", REPO / "deploy/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certificates(folder: Path) -> None:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, all signed by it:
    ca.pem, broker.pem (key and chain, as the broker reads it), client.pem, client.key;
    and a second CA's client certificate (stranger.pem, stranger.key) the broker must refuse.
    """
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    def write_pair(stem: str, subject: str, ca_key: Any, ca_name: x509.Name) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(subject, key, ca_name, ca_key, ca=False)
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(_pem(key))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("warroom-test-ca", ca_key, _name("warroom-test-ca"), ca_key, ca=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.pem").write_bytes(ca_pem)
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker = certificate("kafka-broker", broker_key, ca.subject, ca_key, ca=False)
    (folder / "broker.pem").write_bytes(
        _pem(broker_key) + broker.public_bytes(serialization.Encoding.PEM) + ca_pem
    )
    write_pair("client", "warroom-worker", ca_key, ca.subject)
    other_key = ec.generate_private_key(ec.SECP256R1())
    write_pair("stranger", "stranger", other_key, _name("another-ca"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """The secured broker's listeners (SASL, SASL_SSL, MTLS) and the certificate folder."""
    broker = _broker_module()
    root = tmp_path_factory.mktemp("secured-kafka")
    tls = root / "tls"
    tls.mkdir()
    make_certificates(tls)
    security = broker.Security(
        scram_users=((SCRAM_USER, SCRAM_PASSWORD),),
        plain_users=((PLAIN_USER, PLAIN_PASSWORD),),
        tls_dir=tls,
    )
    with pytest.MonkeyPatch.context() as env:  # a second broker next to the suite's own
        env.setenv("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
        state, child = broker.start_broker(
            root / "broker", 0, 1, 90.0, fresh=True, tie=True, security=security
        )
    try:
        yield state.listeners, tls
    finally:
        broker.stop_broker(root / "broker", child)
        shutil.rmtree(root / "broker", ignore_errors=True)


def _settings(bootstrap: str, tmp_path: Path, **security: Any) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"warroom-sec-{run}",
        bootstrap_servers=bootstrap,
        topic_prefix=f"sec-{run}.",
        partitions=2,
        data_dir=tmp_path / "worker",
        **security,
    )


def scram_settings(listeners: dict[str, str], tmp_path: Path, password: str) -> Settings:
    return _settings(
        listeners["SASL"],
        tmp_path,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=SCRAM_USER,
        sasl_password=password,
    )


def touchpoint(customer: str) -> TouchpointEvent:
    now = datetime.datetime.now(datetime.UTC)
    return TouchpointEvent(
        event_id=f"sec-{uuid.uuid4().hex}",
        customer_id=customer,
        occurred_at=now,
        received_at=now,
        channel=Channel("chat"),
        kind="message_received",
        direction=Direction("inbound"),
        rep_id="rep-1",
        source="it-security/1",
    )


async def read_committed(settings: Settings, topic: Topic, count: int) -> list[Any]:
    """The first ``count`` committed records of a topic, read with the settings' security."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        **client_options(settings),
    )
    await consumer.start()
    try:
        name = settings.topic(topic)
        cluster = await consumer._client.fetch_all_metadata()
        numbers = cluster.partitions_for_topic(name) or set()
        partitions = [TopicPartition(name, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


async def round_trip(settings: Settings) -> None:
    """Topics, a touchpoint through the connectors' sink, a rules record, read back."""
    created = await ensure_topics(settings, wait_seconds=10)
    assert settings.topic(TOUCHPOINTS) in created
    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id=f"{settings.app_id}-chat",
        security=settings.kafka_security(),
    )
    sink = KafkaTouchpointSink(intake)
    await sink.start()
    try:
        sent = touchpoint("cust-secure-1")
        await sink.publish([sent])
    finally:
        await sink.stop()
    where = await publish_bundle_text(settings, "secured", "name: secured\nversion: 1\n")
    assert where.startswith(settings.topic(RULES))
    records = await read_committed(settings, TOUCHPOINTS, 1)
    assert [decode_touchpoint(r.value).event_id for r in records] == [sent.event_id]
    rules = await read_committed(settings, RULES, 1)
    assert [r.key for r in rules] == [b"secured"]


async def test_scram_sha_512_round_trip(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, _ = secured
    await round_trip(scram_settings(listeners, tmp_path, SCRAM_PASSWORD))


async def test_sasl_plain_round_trip(secured: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    listeners, _ = secured
    settings = _settings(
        listeners["SASL"],
        tmp_path,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=PLAIN_USER,
        sasl_password=PLAIN_PASSWORD,
    )
    await round_trip(settings)


async def test_scram_over_tls_round_trip(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, tls = secured
    settings = _settings(
        listeners["SASL_SSL"],
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=SCRAM_USER,
        sasl_password=SCRAM_PASSWORD,
        ssl_cafile=tls / "ca.pem",
    )
    await round_trip(settings)


async def test_mutual_tls_round_trip(secured: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    listeners, tls = secured
    settings = _settings(
        listeners["MTLS"],
        tmp_path,
        security_protocol="SSL",
        ssl_cafile=tls / "ca.pem",
        ssl_certfile=tls / "client.pem",
        ssl_keyfile=tls / "client.key",
    )
    await round_trip(settings)


async def test_wrong_password_fails_at_once_naming_the_user_not_the_password(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, _ = secured
    settings = scram_settings(listeners, tmp_path, WRONG_PASSWORD)
    started = asyncio.get_running_loop().time()
    with pytest.raises(KafkaAccessRefused) as refused:
        await ensure_topics(settings, wait_seconds=60)
    message = str(refused.value)
    assert asyncio.get_running_loop().time() - started < 30, "it retried instead of failing"
    assert SCRAM_USER in message
    assert "SCRAM-SHA-512" in message
    assert "invalid credentials" in message
    assert WRONG_PASSWORD not in message


@pytest.mark.parametrize("command", [["topics"], ["tail", "interventions"]])
def test_the_cli_with_a_wrong_password_exits_without_showing_it(
    secured: tuple[dict[str, str], Path], tmp_path: Path, command: list[str]
) -> None:
    listeners, _ = secured
    settings = scram_settings(listeners, tmp_path, WRONG_PASSWORD)
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *command],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "Traceback" not in output, output
    expected = f"\nwarroom {command[0]}: not starting: Kafka at "
    assert expected in "\n" + done.stderr, output
    assert f"SCRAM-SHA-512 as {SCRAM_USER!r}" in output
    assert "invalid credentials" in output
    assert WRONG_PASSWORD not in output


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, tls = secured
    settings = _settings(
        listeners["MTLS"], tmp_path, security_protocol="SSL", ssl_cafile=tls / "ca.pem"
    )
    with pytest.raises(KafkaAccessRefused, match=r"requires one \(mutual TLS\)"):
        await ensure_topics(settings, wait_seconds=60)


async def test_mutual_tls_refuses_a_certificate_from_another_ca(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, tls = secured
    settings = _settings(
        listeners["MTLS"],
        tmp_path,
        security_protocol="SSL",
        ssl_cafile=tls / "ca.pem",
        ssl_certfile=tls / "stranger.pem",
        ssl_keyfile=tls / "stranger.key",
    )
    with pytest.raises(KafkaAccessRefused, match=r"stranger\.pem, found it refused"):
        await ensure_topics(settings, wait_seconds=60)


# `make chaos`; make test keeps the round trips and refusals on every listener
@pytest.mark.long
async def test_worker_runs_and_restarts_on_scram_over_tls(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """The Faust worker, its producers and its side clients, with SCRAM-SHA-512 over TLS
    (SASL_SSL, as in docs/deploy.md): it processes a touchpoint published by the
    connectors' sink and commits it; restarted, it recovers its state (the exactly-once
    changelog tail probe included) and processes the next. The password appears nowhere
    in its log."""
    listeners, tls = secured
    settings = _settings(
        listeners["SASL_SSL"],
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=SCRAM_USER,
        sasl_password=SCRAM_PASSWORD,
        ssl_cafile=tls / "ca.pem",
        web_port=_free_port(),
    )
    await ensure_topics(settings, wait_seconds=10)
    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id=f"{settings.app_id}-chat",
        security=settings.kafka_security(),
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    for expected in (1, 2):
        worker.start()
        try:
            sink = KafkaTouchpointSink(intake)
            await sink.start()
            try:
                await sink.publish([touchpoint("cust-worker-1")])
            finally:
                await sink.stop()
            last = (await read_committed(settings, TOUCHPOINTS, expected))[-1]
            where = TopicPartition(last.topic, last.partition)
            committed = await _committed_offset(settings, worker, where, last.offset + 1)
            assert committed > last.offset, worker.tail_log()
        finally:
            worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert SCRAM_PASSWORD not in log
    assert "tail probe failed" not in log, log


async def _committed_offset(
    settings: Settings, worker: WorkerProcess, where: TopicPartition, wanted: int
) -> int:
    """The worker group's committed offset of ``where`` once it reaches ``wanted``, or
    what it is after 60 s."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **client_options(settings)
    )
    await admin.start()
    try:
        committed = -1
        deadline = asyncio.get_running_loop().time() + 60
        while committed < wanted and asyncio.get_running_loop().time() < deadline:
            worker.assert_alive()
            try:
                offsets = await admin.list_consumer_group_offsets(settings.app_id)
            except KafkaError:  # the group's coordinator is still being set up
                offsets = {}
            found = offsets.get(where)
            committed = -1 if found is None else found.offset
            await asyncio.sleep(0.5)
        return committed
    finally:
        await admin.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_broker_certificate_from_another_ca_is_refused(
    secured: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    listeners, tls = secured
    settings = _settings(
        listeners["SASL_SSL"],
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=SCRAM_USER,
        sasl_password=SCRAM_PASSWORD,
        ssl_cafile=tls / "stranger.pem",
    )
    with pytest.raises(KafkaAccessRefused, match="expected a broker certificate signed by") as no:
        await ensure_topics(settings, wait_seconds=60)
    assert "CERTIFICATE_VERIFY_FAILED" in str(no.value)
    assert SCRAM_PASSWORD not in str(no.value)
