"""Following an output topic and printing it for people."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from schemas.codec import decode_dead_letter, decode_intervention
from schemas.errors import SchemaError
from schemas.models import DeadLetter, InterventionCommand

from .kafka_security import client_options
from .settings import Settings

_BOLD, _DIM, _YELLOW, _RED, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[33m", "\x1b[31m", "\x1b[0m"


def _colour(out: TextIO) -> bool:
    return out.isatty() and os.environ.get("NO_COLOR") is None


def format_intervention(command: InterventionCommand, colour: bool = False) -> str:
    bold, dim, reset = (_BOLD, _DIM, _RESET) if colour else ("", "", "")
    assignee = command.rep_id or command.assignee_role or "unassigned"
    due = command.due_at.strftime("%Y-%m-%d %H:%M") if command.due_at else "-"
    why = "; ".join(f"{m.condition} = {m.observed}" for m in command.explanation.matched)
    events = ", ".join(command.explanation.triggering_event_ids)
    return (
        f"{bold}{command.kind.value.upper():<8}{reset} {command.priority.value:<7} "
        f"customer={command.customer_id:<16} assignee={assignee:<12} due={due}\n"
        f"  {bold}{command.title}{reset}\n"
        f"  {command.body}\n"
        f"  {dim}rule {command.rule_id} v{command.rule_version} | why: {why}\n"
        f"  events: {events} | id {command.intervention_id}{reset}"
    )


def format_dead_letter(letter: DeadLetter, colour: bool = False) -> str:
    red, reset = (_RED, _RESET) if colour else ("", "")
    return (
        f"{red}{letter.reason:<16}{reset} {letter.source_topic}[{letter.partition}]@"
        f"{letter.offset}  {letter.detail}  ({len(letter.raw_value)} raw bytes)"
    )


async def tail(
    settings: Settings,
    stream: str,
    from_beginning: bool = False,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print records of ``stream`` as they are committed; returns how many were printed."""
    consumer = AIOKafkaConsumer(
        settings.topic(stream),
        bootstrap_servers=settings.bootstrap_servers,
        **client_options(settings),
        isolation_level="read_committed",
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        group_id=None,
    )
    colour = _colour(out)
    printed = 0
    await consumer.start()
    try:
        async for record in consumer:
            print(_render(stream, record.value or b"", colour), file=out, flush=True)
            printed += 1
            if limit is not None and printed >= limit:
                break
    finally:
        await consumer.stop()
    return printed


def format_metric(record: dict[str, Any], colour: bool = False) -> str:
    bold, dim, reset = (_BOLD, _DIM, _RESET) if colour else ("", "", "")
    rate = record.get("trigger_rate")
    loop = record.get("closed_loop_rate")
    feedback = record.get("feedback", {})
    shown = " ".join(f"{k} {v}" for k, v in feedback.items() if v)
    return (
        f"{dim}{record['interval_end'][11:19]}{reset} {bold}{record['rule_id']:<36}{reset} "
        f"customers {record['customers_evaluated']:>6}  fired {record['fired']:>5} "
        f"({_percent(rate)})  shadow {record['shadowed']:>4}  capped {record['capped']:>4}  "
        f"closed-loop {_percent(loop)}" + (f"  [{shown}]" if shown else "")
    )


def format_journey(record: dict[str, Any]) -> str:
    return (
        f"{record['interval_end'][11:19]} journey {record['journey_id']}/{record['variant']:<12} "
        f"entered {record['entered']:>5}  steps {record['intervened']:>5}  "
        f"completed {record['completed']:>5}  converted {record['converted']:>5} "
        f"({_percent(record['conversion_rate'])})  exited {record['exited']:>5}"
    )


def _percent(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.1%}"


def _render(stream: str, value: bytes, colour: bool) -> str:
    if stream in ("metrics", "audit"):
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return f"undecodable record on {stream}: {exc}"
        if stream == "metrics" and record.get("metric") == "rule_activity":
            return format_metric(record, colour)
        if stream == "metrics" and record.get("metric") == "journey_activity":
            return format_journey(record)
        return orjson.dumps(record).decode()
    try:
        if stream == "interventions":
            return format_intervention(decode_intervention(value), colour)
        return format_dead_letter(decode_dead_letter(value), colour)
    except SchemaError as exc:
        yellow, reset = (_YELLOW, _RESET) if colour else ("", "")
        return f"{yellow}undecodable record on {stream}: {exc}{reset}"
