"""The email connector against a real Dovecot IMAP server and the real broker: messages
appended over IMAP reach the worker, the state file resumes, a re-read duplicates nothing."""

from __future__ import annotations

import hashlib
import imaplib
import importlib.util
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connectors.email import EmailSettings
from connectors.email_service import EmailPublisher
from connectors.imap import ImaplibMailbox, ImapSettings, ImapState, read_new
from connectors.publisher import KafkaTouchpointSink
from connectors.rejects import KafkaDeadLetterSink
from connectors.settings import IntakeSettings
from schemas.codec import decode_dead_letter, decode_intervention
from schemas.topics import DLQ, TOUCHPOINTS
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import REPO, WorkerProcess, read_all, read_topic, wait_until_committed, worker_metrics


def _dovecot_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "warroom_dovecot", REPO / "deploy" / "imap" / "dovecot.py"
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def imap_server() -> Iterator[Any]:
    """A throwaway Dovecot; installed first when missing. Never skipped: a machine that
    cannot run it fails here with the reason."""
    dovecot = _dovecot_module()
    try:
        with dovecot.server() as server:
            yield server
    except dovecot.DovecotUnavailable as exc:
        pytest.fail(f"no IMAP server for the email connector test: {exc}", pytrace=False)


def message(number: int, customer_domain: str, sent: datetime, **headers: str) -> bytes:
    lines = {
        "Message-ID": f"<m{number}.{customer_domain}@mail.warroom-demo.com>",
        "Date": format_datetime(sent),
        "From": "Ana Li <ana.li@warroom-demo.com>",
        "To": f"buyer@{customer_domain}",
        "Subject": f"Quote Q-2026-{number:04d} for your team",
        "Content-Type": "text/plain; charset=utf-8",
        **headers,
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in lines.items() if v)
    return (head + "\r\nHello, following up on the quote.\r\n").encode()


def event_id(number: int, customer_domain: str) -> str:
    mid = f"m{number}.{customer_domain}@mail.warroom-demo.com"
    return f"email:{hashlib.sha256(mid.encode()).hexdigest()[:32]}"


async def read_mailbox(settings: Settings, imap: ImapSettings) -> dict[str, int]:
    intake = IntakeSettings(
        settings.bootstrap_servers, settings.topic(TOUCHPOINTS), settings.partitions, "it-email"
    )
    sink = KafkaTouchpointSink(intake)
    letters = KafkaDeadLetterSink(settings.bootstrap_servers, settings.topic(DLQ.name))
    await sink.start()
    await letters.start()
    try:
        publisher = EmailPublisher(EmailSettings(max_message_bytes=100_000), sink, letters)
        state = ImapState.load(imap.state_file)
        counts = await read_new(imap, lambda: ImaplibMailbox(imap), publisher, state)
    finally:
        await letters.stop()
        await sink.stop()
    return dict(counts)


async def test_mail_appended_over_imap_reaches_the_worker_once_even_when_read_twice(
    settings: Settings, worker: WorkerProcess, imap_server: Any, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    worker.start()
    domain = f"acme-{uuid.uuid4().hex[:6]}.com"
    now = datetime.now(UTC).replace(microsecond=0)
    client = imaplib.IMAP4(imap_server.host, imap_server.port)
    client.login(imap_server.user, imap_server.password)
    for number in (1, 2, 3):  # three unanswered outbound mails: the built-in rule fires
        sent = now - timedelta(minutes=10 - number)
        client.append("INBOX", None, None, message(number, domain, sent))
    client.append("INBOX", None, None, message(4, domain, now, From=""))  # no sender
    big = message(5, domain, now).replace(b"Hello,", b"Hello, " + b"x" * 120_000)
    client.append("INBOX", None, None, big)  # over the limit: only its head is fetched
    client.logout()

    imap = ImapSettings(
        host=imap_server.host,
        port=imap_server.port,
        username=imap_server.user,
        password=imap_server.password,
        security="plain",
        state_file=tmp_path / "imap-state.json",
        fetch_batch=2,
    )
    first = await read_mailbox(settings, imap)
    assert first == {
        "read": 5,
        "touchpoints": 3,
        "missing_sender": 1,
        "too_large": 1,
        "internal": 0,
    }
    assert await read_mailbox(settings, imap) == {}  # resumed after the last UID: nothing

    def for_customer(found: list[Any]) -> bool:
        return any(c.customer_id == domain for c in found)

    [command] = await read_topic(
        settings, "interventions", for_customer, decode_intervention, worker
    )
    assert command.rule_id == "builtin.unanswered-outbound"
    assert command.rep_id == "ana.li@warroom-demo.com"
    assert command.explanation.triggering_event_ids == [event_id(n, domain) for n in (1, 2, 3)]
    letters = await read_topic(settings, "dlq", lambda f: len(f) >= 2, decode_dead_letter, worker)
    source = f"imap:{imap_server.host}/INBOX"
    assert sorted((x.source_topic, x.offset, x.reason) for x in letters) == [
        (source, 4, "missing_sender"),
        (source, 5, "too_large"),
    ]
    too_large = next(x for x in letters if x.reason == "too_large")
    assert big.startswith(too_large.raw_value) and len(too_large.raw_value) == 65_536
    assert too_large.detail == f"uid 5: expected at most 100000 bytes, found {len(big)}"

    # The state file is lost: the whole mailbox is read and published again.
    imap.state_file.unlink()
    again = await read_mailbox(settings, imap)
    assert again["touchpoints"] == 3
    await wait_until_committed(settings, worker)
    metrics = await worker_metrics(settings)
    assert 'warroom_touchpoints_total{outcome="processed"} 3.0' in metrics
    assert 'warroom_touchpoints_total{outcome="duplicate"} 3.0' in metrics
    interventions = await read_all(settings, "interventions", decode_intervention)
    assert [c.customer_id for c in interventions] == [domain]
