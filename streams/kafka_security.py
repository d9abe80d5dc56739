"""Kafka security from :class:`Settings`: options for aiokafka clients, Faust credentials,
and a clear refusal instead of endless retries when the broker rejects the client."""

from __future__ import annotations

from typing import Any

import faust
from faust.types.auth import CredentialsT

from connectors.kafka_security import KafkaAccessRefused, explain_refusal

from .settings import Settings

__all__ = ["KafkaAccessRefused", "client_options", "faust_credentials", "raise_if_refused"]


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every AIOKafkaProducer, AIOKafkaConsumer and admin client."""
    return settings.kafka_security().client_options()


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """``broker_credentials`` of the Faust app (its consumers, producers and admin)."""
    security = settings.kafka_security()
    if security.uses_sasl:
        assert security.sasl_password is not None  # checked when the settings were built
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.get_secret_value(),
            mechanism=security.sasl_mechanism,
            ssl_context=security.ssl_context(),
        )
    context = security.ssl_context()
    return None if context is None else faust.SSLCredentials(context)


async def raise_if_refused(settings: Settings) -> None:
    """After a failed connection: raise KafkaAccessRefused if the brokers refuse these
    credentials or this certificate (retrying would not help)."""
    reason = await explain_refusal(settings.bootstrap_servers, settings.kafka_security())
    if reason is not None:
        raise KafkaAccessRefused(reason)
