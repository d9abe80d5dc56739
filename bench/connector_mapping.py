"""Mapping, webhook and WeCom connectors without a broker: how fast source messages become
encoded touchpoint records.

    .venv/bin/python bench/connector_mapping.py --messages 50000

Mapping: equipment-alarm JSON messages (as on a Kafka topic) through ``orjson.loads``,
the shipped ``equipment-alarm`` mapping and ``envelopes`` (Avro encoding, grouped by
partition as the publisher writes them, 500 messages per batch as the follower reads
them). Spare-part orders: an ERP export of 100 orders per body (strftime times in a
time zone, text amounts) the same way.

Webhook: the HMAC-SHA256 check of a signed ticket body, then the service-ticket
mapping and encoding, one request at a time (the HTTP server itself is not measured).

WeCom: an encrypted envelope through the signature check, AES-256-CBC decryption,
the receiver check, XML parsing and mapping, then encoding, one callback at a time.

Each figure is the best of ``--repeat`` runs, in touchpoints made per second (one
per alarm raised, order, request or callback; cleared alarms are left out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pydantic import SecretStr  # noqa: E402

from connectors.mapping import load_mapping  # noqa: E402
from connectors.publisher import envelopes  # noqa: E402
from connectors.webhook import signature, verify  # noqa: E402
from connectors.wecom import WeComCallback, encrypt, msg_signature, to_message  # noqa: E402

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PARTITIONS = 12


def mapping(name: str):  # type: ignore[no-untyped-def]
    path = REPO / "connectors" / "mappings" / f"{name}.yaml"
    return load_mapping(path.read_text(encoding="utf-8"), str(path))


def alarms(count: int) -> list[bytes]:
    severities = ("MAJOR", "CRITICAL", "MINOR", "WARNING")
    return [
        orjson.dumps(
            {
                "alarmId": f"a-{n}",
                "deviceId": f"DEV-{n % 5000:05d}",
                "accountId": f"acct-{n % 2000:05d}",
                "code": f"E{n % 90}",
                "severity": severities[n % 4],
                "state": "RAISED" if n % 10 else "CLEARED",
                "raisedAt": int((NOW - timedelta(seconds=n)).timestamp() * 1000),
                "reading": {"value": 20.0 + n % 70, "unit": "C"},
                "site": {"name": f"site {n % 300}", "ownerRep": f"rep-{n % 40}"},
            }
        )
        for n in range(count)
    ]


def orders(count: int, per_body: int = 100) -> list[bytes]:
    sample = json.loads(
        (REPO / "tests/data/connectors/mapping/spare-part-orders.json").read_text("utf-8")
    )
    template = sample["orders"][0]
    bodies = []
    for start in range(0, count, per_body):
        batch = []
        for n in range(start, min(count, start + per_body)):
            order = dict(template, OrderNumber=f"{n:010d}")
            order["SoldTo"] = {"AccountId": f"acct-{n % 2000:05d}", "ContactId": f"ct-{n}"}
            batch.append(order)
        bodies.append(orjson.dumps({"orders": batch}))
    return bodies


def best(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """(best rate per second, items per run)."""
    rates = []
    items = 0
    for _ in range(repeat):
        start = time.perf_counter()
        items = run()
        rates.append(items / (time.perf_counter() - start))
    return max(rates), items


def bench_topic(messages: list[bytes], name: str, batch: int = 500) -> Callable[[], int]:
    compiled = mapping(name)

    def run() -> int:
        mapped = 0
        for start in range(0, len(messages), batch):
            events = []
            for value in messages[start : start + batch]:
                events.extend(compiled.map_body(orjson.loads(value), NOW).events)
            envelopes(events, PARTITIONS)
            mapped += len(events)
        return mapped

    return run


def bench_webhook(count: int) -> Callable[[], int]:
    compiled = mapping("service-ticket")
    secret = "whsec-bench-0123456789abcdef"
    bodies = []
    for n in range(count):
        body = orjson.dumps(
            {
                "event": "ticket.created",
                "ticket": {
                    "id": n,
                    "type": "incident",
                    "priority": "high",
                    "subject": "Chiller leaking after maintenance",
                    "updated_at": "2026-11-30T08:15:22+08:00",
                    "requester": {"id": f"ct-{n}"},
                    "organization": {"external_id": f"acct-{n % 2000:05d}"},
                    "custom_fields": {"account_rep": "rep-li", "asset_serial": "CH-3"},
                },
            }
        )
        stamp = str(int(NOW.timestamp()))
        bodies.append((stamp, signature(secret, stamp, body), body))

    def run() -> int:
        for stamp, signed, body in bodies:
            verify(secret, stamp, signed, body, NOW.timestamp())
            envelopes(compiled.map_body(orjson.loads(body), NOW).events, PARTITIONS)
        return len(bodies)

    return run


def bench_wecom(count: int) -> Callable[[], int]:
    callback = WeComCallback(
        SecretStr("bench-token"), SecretStr("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"), "ww1"
    )
    sample = (REPO / "tests/data/connectors/wecom/external-text-inbound.xml").read_bytes()
    stamp = str(int(NOW.timestamp()))
    requests = []
    for n in range(count):
        message = sample.replace(b"7395012345678901234", str(n).encode())
        encrypted = encrypt(callback.key, "ww1", message)
        body = f"<xml><ToUserName>ww1</ToUserName><Encrypt>{encrypted}</Encrypt></xml>".encode()
        requests.append((msg_signature("bench-token", stamp, "42", encrypted), body))

    def run() -> int:
        for signed, body in requests:
            xml = callback.open_envelope(signed, stamp, "42", body, NOW.timestamp())
            event = to_message(xml, "ww1", NOW).event
            assert event is not None
            envelopes([event], PARTITIONS)
        return len(requests)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.messages
    rows = [
        ("mapping: equipment alarms from a topic", bench_topic(alarms(n), "equipment-alarm")),
        ("mapping: ERP orders, 100 a body", bench_topic(orders(n), "spare-part-order", 5)),
        ("webhook: signed ticket, verify + map + encode", bench_webhook(n // 5)),
        ("wecom: envelope, decrypt + parse + map + encode", bench_wecom(n // 5)),
    ]
    for label, run in rows:
        rate, items = best(args.repeat, run)
        print(f"{label:50s} {rate:>10,.0f} touchpoints/s  ({items:,} a run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
