"""How a Kafka client authenticates and encrypts: SASL (PLAIN, SCRAM) and (mutual) TLS.

:class:`KafkaSecurity` holds the plain values (checked when built) and turns them into
aiokafka client options; every producer, consumer and admin client of the worker, the
gate, the CLI and the connectors is created with them. :func:`explain_refusal` asks
the broker once more, directly, why it refused a client, because aiokafka only logs
that and then raises "Unable to bootstrap".

The SASL password is a :class:`pydantic.SecretStr`: ``repr`` and ``str`` show stars,
and no message built here contains it.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: Final = get_args(SecurityProtocol)
MECHANISMS: Final = get_args(SaslMechanism)
PROBE_TIMEOUT_SECONDS = 10.0


class KafkaSecurityError(ValueError):
    """The security settings do not fit together, or a file they name is unusable."""


class KafkaAccessRefused(RuntimeError):
    """The broker refused the client's credentials or certificate. Retrying will not help:
    fix the ``WARROOM_SASL_*`` / ``WARROOM_SSL_*`` settings (or the broker's users)."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Security settings of Kafka clients; the defaults are an unsecured connection."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise KafkaSecurityError("; ".join(problems))
        self.ssl_context()  # a PEM file that does not load fails now, not at connect time

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def problems(self) -> list[str]:
        """What is wrong, each naming the setting, what was expected and what was found."""
        if self.protocol not in PROTOCOLS:
            return [
                f"security_protocol: expected one of {', '.join(PROTOCOLS)}, "
                f"found {self.protocol!r}"
            ]
        found: list[str] = []
        if self.uses_sasl:
            found += self._sasl_problems()
        else:
            for name, value in (
                ("sasl_mechanism", self.sasl_mechanism),
                ("sasl_username", self.sasl_username),
                ("sasl_password", self.sasl_password),
            ):
                if value is not None:
                    shown = "a password" if name == "sasl_password" else repr(value)
                    found.append(
                        f"{name}: expected it unset with security_protocol {self.protocol} "
                        f"(no SASL), found {shown}; use SASL_PLAINTEXT or SASL_SSL"
                    )
        if self.uses_tls:
            found += self._tls_problems()
        else:
            for name, path in (
                ("ssl_cafile", self.ssl_cafile),
                ("ssl_certfile", self.ssl_certfile),
                ("ssl_keyfile", self.ssl_keyfile),
            ):
                if path is not None:
                    found.append(
                        f"{name}: expected it unset with security_protocol {self.protocol} "
                        f"(no TLS), found {str(path)!r}; use SSL or SASL_SSL"
                    )
        return found

    def _sasl_problems(self) -> list[str]:
        found: list[str] = []
        if self.sasl_mechanism not in MECHANISMS:
            found.append(
                f"sasl_mechanism: expected one of {', '.join(MECHANISMS)} with "
                f"security_protocol {self.protocol}, found {self.sasl_mechanism!r}"
            )
        if not self.sasl_username:
            found.append(
                f"sasl_username: expected a user name with security_protocol {self.protocol}, "
                f"found {self.sasl_username!r}"
            )
        if self.sasl_password is None or not self.sasl_password.get_secret_value():
            found.append(
                f"sasl_password: expected a password with security_protocol {self.protocol}, "
                f"found {'none' if self.sasl_password is None else 'an empty one'}"
            )
        return found

    def _tls_problems(self) -> list[str]:
        found: list[str] = []
        if self.ssl_cafile is None:
            found.append(
                f"ssl_cafile: expected the PEM file of the CA that signed the brokers' "
                f"certificates with security_protocol {self.protocol}, found none"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = (
                ("ssl_certfile", "ssl_keyfile")
                if self.ssl_keyfile is None
                else ("ssl_keyfile", "ssl_certfile")
            )
            found.append(
                f"{missing}: expected it with {given} (mutual TLS needs the client's "
                "certificate and its private key), found none"
            )
        for name, path in (
            ("ssl_cafile", self.ssl_cafile),
            ("ssl_certfile", self.ssl_certfile),
            ("ssl_keyfile", self.ssl_keyfile),
        ):
            if path is not None and not path.is_file():
                what = "a folder" if path.is_dir() else "nothing"
                found.append(f"{name}: expected a readable PEM file at {path}, found {what}")
        return found

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (hostnames checked), or None without TLS."""
        if not self.uses_tls:
            return None
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=None if self.ssl_cafile is None else str(self.ssl_cafile),
                certfile=None if self.ssl_certfile is None else str(self.ssl_certfile),
                keyfile=None if self.ssl_keyfile is None else str(self.ssl_keyfile),
            )
            return context
        except (ssl.SSLError, OSError) as exc:
            files = ", ".join(
                f"{name} {path}"
                for name, path in (
                    ("ssl_cafile", self.ssl_cafile),
                    ("ssl_certfile", self.ssl_certfile),
                    ("ssl_keyfile", self.ssl_keyfile),
                )
                if path is not None
            )
            raise KafkaSecurityError(
                f"expected PEM certificates and an unencrypted private key that belongs to "
                f"the certificate ({files}), found a TLS error: {exc}"
            ) from exc

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked in __post_init__
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def describe(self) -> str:
        """For logs and errors: the protocol, mechanism, user and files, never the password."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}")
        if self.ssl_certfile is not None:
            parts.append(f"client certificate {self.ssl_certfile}")
        return ", ".join(parts)


PLAINTEXT = KafkaSecurity()


async def explain_refusal(bootstrap_servers: str, security: KafkaSecurity) -> str | None:
    """Why the brokers refuse this client, or None when none refuses it (they may just be
    down or starting: worth retrying)."""
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    request_timeout_ms=int(PROBE_TIMEOUT_SECONDS * 1000),
                    **security.client_options(),
                ),
                PROBE_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, ssl.SSLError):
                return _scrub(_tls_refusal(address, security, exc), security)
            continue  # not listening (yet): not a refusal
        except KafkaConnectionError:
            if security.uses_tls and security.ssl_certfile is None:
                return (
                    f"Kafka at {address} closed the connection during the TLS set-up "
                    f"({security.describe()}): expected it to accept a client without a "
                    "certificate, found a listener that requires one (mutual TLS); set "
                    "ssl_certfile and ssl_keyfile"
                )
            if security.uses_tls:
                return (
                    f"Kafka at {address} closed the connection during the TLS set-up "
                    f"({security.describe()}): expected it to accept the client certificate "
                    f"{security.ssl_certfile}, found it refused (is it signed by a CA the "
                    "broker trusts?)"
                )
            continue
        except KafkaError as exc:
            return _scrub(
                f"Kafka at {address} refused the client ({security.describe()}): "
                f"{type(exc).__name__}: {exc}",
                security,
            )
        conn.close()
    return None


def _tls_refusal(address: str, security: KafkaSecurity, exc: ssl.SSLError) -> str:
    return (
        f"TLS with Kafka at {address} failed ({security.describe()}, ssl_cafile "
        f"{security.ssl_cafile}): expected a broker certificate signed by that CA for "
        f"that host name, found {type(exc).__name__}: {exc}"
    )


def _scrub(message: str, security: KafkaSecurity) -> str:
    if security.sasl_password is not None and security.sasl_password.get_secret_value():
        return message.replace(security.sasl_password.get_secret_value(), "**********")
    return message
