"""Kafka security settings: checked together when built, turned into client options and
Faust credentials, and the password never shown."""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import Any

import faust
import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from connectors.kafka_security import (
    PLAINTEXT,
    KafkaSecurity,
    KafkaSecurityError,
    explain_refusal,
)
from connectors.settings import IntakeSettings
from streams.kafka_security import client_options, faust_credentials
from streams.settings import Settings

PASSWORD = "s3cret-pa55word-for-tests"


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    """A self-signed certificate and its key, as PEM files (ca, cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "k"}
    paths["ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def scram(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "warroom-worker",
        "sasl_password": PASSWORD,
    }
    values.update(changes)
    return values


def test_defaults_are_plaintext_with_no_credentials() -> None:
    settings = Settings()
    assert settings.security_protocol == "PLAINTEXT"
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_security_comes_from_the_documented_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARROOM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("WARROOM_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("WARROOM_SASL_USERNAME", "warroom-worker")
    monkeypatch.setenv("WARROOM_SASL_PASSWORD", PASSWORD)
    options = client_options(Settings())
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "warroom-worker",
        "sasl_plain_password": PASSWORD,
    }


def test_the_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(**scram())  # type: ignore[arg-type]
    security = settings.kafka_security()
    credentials = faust_credentials(settings)
    shown = [repr(settings), str(settings), repr(security), security.describe()]
    shown += [repr(credentials), settings.model_dump_json()]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("warroom.test").info("settings %r %s", settings, security)
    shown.append(caplog.text)
    assert all(PASSWORD not in text for text in shown), [t for t in shown if PASSWORD in t]
    assert "warroom-worker" in security.describe()


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"sasl_mechanism": None}, ["sasl_mechanism", "expected one of PLAIN", "found None"]),
        ({"sasl_mechanism": "GSSAPI"}, ["sasl_mechanism", "'SCRAM-SHA-512'", "'GSSAPI'"]),
        ({"sasl_username": None}, ["sasl_username: expected a user name", "SASL_PLAINTEXT"]),
        ({"sasl_password": None}, ["sasl_password: expected a password", "found none"]),
        ({"sasl_password": ""}, ["sasl_password: expected a password", "found an empty one"]),
        (
            {"security_protocol": "PLAINTEXT"},
            ["sasl_username: expected it unset with security_protocol PLAINTEXT", "SASL_SSL"],
        ),
        ({"security_protocol": "SASL_SSL"}, ["ssl_cafile: expected the PEM file", "found none"]),
    ],
)
def test_settings_that_do_not_fit_together_are_refused_when_built(
    changes: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(**scram(**changes))  # type: ignore[arg-type]
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message
    assert PASSWORD not in message


def test_a_password_without_sasl_is_refused_without_showing_it() -> None:
    with pytest.raises(KafkaSecurityError) as refused:
        KafkaSecurity(sasl_password=SecretStr(PASSWORD))
    assert "sasl_password: expected it unset with security_protocol PLAINTEXT" in str(refused.value)
    assert "found a password" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_unknown_protocol_names_the_choices() -> None:
    with pytest.raises(
        KafkaSecurityError,
        match="expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, found 'TLS'",
    ):
        KafkaSecurity(protocol="TLS")


def test_tls_needs_a_ca_file_that_exists(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(KafkaSecurityError) as refused:
        KafkaSecurity(protocol="SSL", ssl_cafile=missing)
    assert f"ssl_cafile: expected a readable PEM file at {missing}, found nothing" in str(
        refused.value
    )
    with pytest.raises(KafkaSecurityError, match="found a folder"):
        KafkaSecurity(protocol="SSL", ssl_cafile=tmp_path)


def test_a_file_that_is_not_pem_is_refused_when_built(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(
        KafkaSecurityError, match=r"expected PEM certificates.*ssl_cafile .*ca\.pem"
    ):
        KafkaSecurity(protocol="SSL", ssl_cafile=junk)


def test_mutual_tls_needs_the_certificate_and_its_key(pem: dict[str, Path]) -> None:
    with pytest.raises(KafkaSecurityError, match="ssl_keyfile: expected it with ssl_certfile"):
        KafkaSecurity(protocol="SSL", ssl_cafile=pem["ca"], ssl_certfile=pem["cert"])
    with pytest.raises(KafkaSecurityError, match="ssl_certfile: expected it with ssl_keyfile"):
        KafkaSecurity(protocol="SSL", ssl_cafile=pem["ca"], ssl_keyfile=pem["key"])


def test_tls_files_without_tls_are_refused(pem: dict[str, Path]) -> None:
    with pytest.raises(
        KafkaSecurityError,
        match="ssl_cafile: expected it unset with security_protocol SASL_PLAINTEXT",
    ):
        KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password=SecretStr("p"),
            ssl_cafile=pem["ca"],
        )


def test_mutual_tls_options_carry_a_verifying_context(pem: dict[str, Path]) -> None:
    security = KafkaSecurity(
        protocol="SSL", ssl_cafile=pem["ca"], ssl_certfile=pem["cert"], ssl_keyfile=pem["key"]
    )
    options = security.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "sasl_plain_password" not in options


def test_faust_credentials_follow_the_protocol(pem: dict[str, Path]) -> None:
    sasl_ssl = Settings(**scram(security_protocol="SASL_SSL", ssl_cafile=pem["ca"]))  # type: ignore[arg-type]
    credentials = faust_credentials(sasl_ssl)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "warroom-worker"
    assert credentials.password == PASSWORD
    assert isinstance(credentials.ssl_context, ssl.SSLContext)

    plain = faust_credentials(Settings(**scram(sasl_mechanism="PLAIN")))  # type: ignore[arg-type]
    assert isinstance(plain, faust.SASLCredentials)
    assert plain.protocol.value == "SASL_PLAINTEXT"
    assert plain.mechanism.value == "PLAIN"

    mtls = Settings(
        security_protocol="SSL",
        ssl_cafile=pem["ca"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
    )
    tls = faust_credentials(mtls)
    assert isinstance(tls, faust.SSLCredentials)
    assert tls.protocol.value == "SSL"


def test_faust_app_gets_the_credentials(tmp_path: Path) -> None:
    from streams.app import create_app

    settings = Settings(data_dir=tmp_path, **scram())  # type: ignore[arg-type]
    app = create_app(settings).app
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "warroom-worker"


def test_connectors_get_security_through_intake_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.cli import _intake_settings, _parser

    for name, value in scram().items():
        monkeypatch.setenv(f"WARROOM_{name.upper()}", str(value))
    args = _parser().parse_args(["chat", "send", "touchpoints.jsonl"])
    intake = _intake_settings(args, "chat")
    assert intake.security.client_options()["sasl_plain_username"] == "warroom-worker"
    assert PASSWORD not in repr(intake)


def test_intake_settings_default_to_plaintext() -> None:
    intake = IntakeSettings(bootstrap_servers="b:9092", topic="t", partitions=1, instance_id="i")
    assert intake.security is PLAINTEXT


async def test_a_closed_port_is_not_a_refusal() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await explain_refusal(f"127.0.0.1:{port}", KafkaSecurity(**{})) is None


async def test_crm_sink_clients_get_the_security() -> None:
    from connectors.crm_sink import (
        CrmSinkSettings,
        FeedbackHistory,
        KafkaFeedbackSink,
        RecentlySent,
    )

    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="crm",
        sasl_password=SecretStr(PASSWORD),
    )
    settings = CrmSinkSettings(
        bootstrap_servers="b:9092",
        interventions_topic="interventions",
        feedback_topic="feedback",
        dlq_topic="dlq",
        partitions=1,
        group_id="crm",
        webhook_url="http://crm.example/hook",
        security=security,
    )
    assert PASSWORD not in repr(settings)
    feedback = KafkaFeedbackSink("b:9092", "feedback", 1, security)
    assert feedback._producer.client._sasl_plain_username == "crm"
    history = FeedbackHistory("b:9092", "feedback", RecentlySent(10), 10, security)
    assert history._security is security


def _broker_module() -> Any:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "broker.py"
    spec = importlib.util.spec_from_file_location("warroom_broker_unit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_local_broker_secured_listeners(tmp_path: Path) -> None:
    broker = _broker_module()
    security = broker.Security(
        scram_users=(("worker", "pw-one"),), plain_users=(("cli", "pw-two"),), tls_dir=tmp_path
    )
    cfg = broker.BrokerConfig(tmp_path, 9092, 9093, 1, security, (9094, 9095, 9096))
    props = dict(line.split("=", 1) for line in broker.server_properties(cfg).splitlines() if line)
    assert cfg.listeners == {
        "SASL": "127.0.0.1:9094",
        "SASL_SSL": "127.0.0.1:9095",
        "MTLS": "127.0.0.1:9096",
    }
    assert props["listener.security.protocol.map"].split(",")[2:] == [
        "SASL:SASL_PLAINTEXT",
        "SASL_SSL:SASL_SSL",
        "MTLS:SSL",
    ]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert (
        props["listener.name.sasl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
    )
    assert 'user_cli="pw-two"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert props["ssl.keystore.location"] == str(tmp_path / "broker.pem")


def test_local_broker_plaintext_only_by_default(tmp_path: Path) -> None:
    broker = _broker_module()
    cfg = broker.BrokerConfig(tmp_path, 9092, 9093, 1)
    text = broker.server_properties(cfg)
    assert cfg.listeners == {}
    assert "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n" in text
    assert "sasl" not in text and "ssl." not in text


@pytest.mark.parametrize("text", ["nocolon", ":pw", "user:", "us,er:pw", "user:p]w", 'u:"'])
def test_local_broker_refuses_users_format_cannot_take(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME:PASSWORD"):
        _broker_module().parse_user(text)
