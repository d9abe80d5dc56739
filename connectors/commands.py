"""``warroom meetings``, ``warroom pos`` and ``warroom usage``: the file and HTTP
connectors run against Kafka.

The ``warroom`` command registers these with :func:`add_file_connector_commands`, handing
over how to build the publishing settings and the dead-letter topic name from its own
settings (connectors never read the worker's settings themselves).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .settings import IntakeSettings

SinkSettings = Callable[[argparse.Namespace, str], tuple[IntakeSettings, str]]
"""(parsed arguments, role) -> (publishing settings, full name of the dead-letter topic)"""

T = TypeVar("T")


def add_file_connector_commands(commands: Any, sink_settings: SinkSettings) -> None:
    """Add the meetings, pos and usage commands to the ``warroom`` sub-command set."""

    def runs(handler: Callable[[argparse.Namespace, SinkSettings], int]) -> Any:
        return lambda args: handler(args, sink_settings)

    meetings = commands.add_parser("meetings", help="meeting transcripts -> meeting_held")
    meetings_actions = meetings.add_subparsers(metavar="ACTION", required=True)
    read = meetings_actions.add_parser(
        "read",
        help="publish one touchpoint per transcript (.vtt, .srt, .json); meeting details "
        "from FILE.meeting.json or the options",
    )
    read.add_argument("files", type=Path, nargs="+")
    read.add_argument(
        "--rep", action="append", default=[], metavar="NAME=REP_ID", help="a speaker who is a rep"
    )
    read.add_argument("--keywords", type=Path, help="YAML or JSON: group name -> phrases")
    read.add_argument("--customer", help="the customer (instead of FILE.meeting.json)")
    read.add_argument("--started-at", help="when the meeting started, ISO 8601 with timezone")
    read.add_argument("--meeting-id")
    read.set_defaults(run=runs(_meetings_read))

    for source, kinds in (("pos", "purchase lines (.csv, .jsonl)"), ("usage", "usage events")):
        parser = commands.add_parser(source, help=f"the {source} connector: {kinds}")
        actions = parser.add_subparsers(metavar="ACTION", required=True)
        once = actions.add_parser("read", help="publish whole files once")
        once.add_argument("files", type=Path, nargs="+")
        follow = actions.add_parser(
            "follow", help="publish a file as it grows; resumes from --state after a restart"
        )
        follow.add_argument("file", type=Path)
        follow.add_argument("--state", type=Path, required=True, help="the position file")
        follow.add_argument("--poll-seconds", type=float, default=0.5)
        follow.add_argument(
            "--max-batch-bytes", type=int, default=None, help="bytes read per transaction"
        )
        serve = actions.add_parser("serve", help=f"accept {kinds} over HTTP")
        serve.add_argument("--host", default="127.0.0.1")
        serve.add_argument("--port", type=int, default=8081 if source == "pos" else 8082)
        for command in (once, follow, serve):
            command.add_argument(
                "--instance-id", default=None, help="names this replica's Kafka producers"
            )
            if source == "pos":
                command.add_argument("--currency", help="currency of lines that give none")
                command.add_argument(
                    "--timezone", help="IANA zone of times written without one, e.g. Asia/Shanghai"
                )
                command.add_argument("--industry", help="industry of the touchpoints")
        if source == "pos":
            once.set_defaults(run=runs(_pos_read))
            follow.set_defaults(run=runs(_pos_follow))
            serve.set_defaults(run=runs(_pos_serve))
        else:
            once.set_defaults(run=runs(_usage_read))
            follow.set_defaults(run=runs(_usage_follow))
            serve.set_defaults(run=runs(_usage_serve))
    read.add_argument("--instance-id", default=None, help="names this replica's Kafka producers")


def follower_transactional_id(intake: IntakeSettings, state: Path) -> str:
    """One transactional id per position file, the same after a restart: the restarted
    follower's producer fences its killed predecessor and so aborts the transaction it
    left open at once; otherwise read_committed consumers of those partitions (the
    worker among them) wait up to ``transaction_timeout_ms`` for the broker to abort it."""
    import hashlib

    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    return f"{intake.instance_id}-{digest}"


async def _with_sinks(
    intake: IntakeSettings,
    dlq_topic: str,
    body: Callable[[Any, Any], Awaitable[T]],
    transactional_id: str | None = None,
) -> T:
    from .publisher import KafkaTouchpointSink, TransactionalProducer
    from .rejects import KafkaDeadLetterSink

    class StableSink(KafkaTouchpointSink):
        def _aiokafka_producer(self, _: str) -> TransactionalProducer:
            assert transactional_id is not None
            return super()._aiokafka_producer(transactional_id)

    sink = KafkaTouchpointSink(intake) if transactional_id is None else StableSink(intake)
    letters = KafkaDeadLetterSink(intake.bootstrap_servers, dlq_topic, intake.security)
    await sink.start()
    try:
        await letters.start()
        try:
            return await body(sink, letters)
        finally:
            await letters.stop()
    finally:
        await sink.stop()  # finishes the transactions already asked for


def _keywords(path: Path | None) -> Any:
    import yaml

    from .meetings import DEFAULT_KEYWORDS, KeywordGroups

    if path is None:
        return KeywordGroups(DEFAULT_KEYWORDS)
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(groups, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in groups.values()
    ):
        raise ValueError(
            f"{path}: expected a mapping of group name -> list of phrases, "
            f"found {type(groups).__name__}"
        )
    return KeywordGroups({str(k): tuple(v) for k, v in groups.items()})


def _meetings_read(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .meetings import MeetingInfo, publish_transcripts

    reps: dict[str, str] = {}
    for given in args.rep:
        name, equals, rep_id = given.partition("=")
        if not equals or not name.strip() or not rep_id.strip():
            print(f"--rep: expected NAME=REP_ID, found {given!r}", file=sys.stderr)
            return 2
        reps[name.strip()] = rep_id.strip()
    info = None
    if args.customer or args.started_at:
        info = MeetingInfo.model_validate(
            {
                "customer_id": args.customer,
                "started_at": args.started_at,
                "meeting_id": args.meeting_id,
            }
        )
    keywords = _keywords(args.keywords)
    intake, dlq = sink_settings(args, "meetings-file")

    async def body(sink: Any, letters: Any) -> Any:
        return await publish_transcripts(
            args.files, sink, letters, keywords, datetime.now(UTC), info, reps
        )

    result = asyncio.run(_with_sinks(intake, dlq, body))
    print(
        f"published {len(result.published)} meeting touchpoint(s); "
        f"{result.rejected} transcript(s) to the dead letters"
    )
    return 0


def _pos_defaults(args: argparse.Namespace) -> Any:
    from zoneinfo import ZoneInfo

    from .pos import PosDefaults

    return PosDefaults(
        currency=args.currency.upper() if args.currency else None,
        timezone=ZoneInfo(args.timezone) if args.timezone else None,
        industry=args.industry,
    )


def _report(counts: Any, what: str) -> None:
    print(
        f"published {counts.published} {what}; {counts.rejected} to the dead letters"
        + (f"; {counts.skipped} without a customer" if counts.skipped else "")
    )


def _pos_read(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .pos import read_files

    defaults = _pos_defaults(args)
    intake, dlq = sink_settings(args, "pos-file")

    async def body(sink: Any, letters: Any) -> Any:
        return await read_files(args.files, sink, letters, defaults)

    _report(asyncio.run(_with_sinks(intake, dlq, body)), "purchase touchpoint(s)")
    return 0


def _pos_follow(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .pos import follower

    defaults = _pos_defaults(args)
    intake, dlq = sink_settings(args, "pos-follow")

    async def body(sink: Any, letters: Any) -> Any:
        from .running import stop_on_signals

        stop = stop_on_signals()
        follow, batches = follower(
            args.file,
            args.state,
            sink,
            letters,
            defaults,
            poll_seconds=args.poll_seconds,
            max_batch_bytes=args.max_batch_bytes,
        )
        print(f"following {args.file} (position in {args.state})", flush=True)
        await follow.run(stop)
        return batches.counts

    transactional_id = follower_transactional_id(intake, args.state)
    _report(asyncio.run(_with_sinks(intake, dlq, body, transactional_id)), "purchase touchpoint(s)")
    return 0


def _pos_serve(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .pos import create_http_app

    defaults = _pos_defaults(args)
    intake, _ = sink_settings(args, "pos-http")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve(intake, lambda sink: create_http_app(sink, defaults), args, "/v1/purchases")
        )
    return 0


def _usage_read(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .sentiment import LexiconSentiment
    from .usage import read_files

    intake, dlq = sink_settings(args, "usage-file")

    async def body(sink: Any, letters: Any) -> Any:
        return await read_files(args.files, sink, letters, LexiconSentiment())

    _report(asyncio.run(_with_sinks(intake, dlq, body)), "usage touchpoint(s)")
    return 0


def _usage_follow(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .sentiment import LexiconSentiment
    from .usage import follower

    intake, dlq = sink_settings(args, "usage-follow")

    async def body(sink: Any, letters: Any) -> Any:
        from .running import stop_on_signals

        stop = stop_on_signals()
        sentiment = LexiconSentiment()
        await asyncio.to_thread(sentiment.warm_up)
        follow, batches = follower(
            args.file, args.state, sink, letters, sentiment, poll_seconds=args.poll_seconds
        )
        print(f"following {args.file} (position in {args.state})", flush=True)
        await follow.run(stop)
        return batches.counts

    transactional_id = follower_transactional_id(intake, args.state)
    _report(asyncio.run(_with_sinks(intake, dlq, body, transactional_id)), "usage touchpoint(s)")
    return 0


def _usage_serve(args: argparse.Namespace, sink_settings: SinkSettings) -> int:
    from .sentiment import LexiconSentiment
    from .usage import create_http_app

    sentiment = LexiconSentiment()
    sentiment.warm_up()
    intake, _ = sink_settings(args, "usage-http")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve(intake, lambda sink: create_http_app(sink, sentiment), args, "/v1/usage")
        )
    return 0


async def _serve(intake: IntakeSettings, app: Callable[[Any], Any], args: Any, path: str) -> None:
    from .running import serve_intake, stop_on_signals

    await serve_intake(
        intake,
        app,
        args.host,
        args.port,
        stop_on_signals(),
        lambda _: f"listening on http://{args.host}:{args.port}{path}",
    )
