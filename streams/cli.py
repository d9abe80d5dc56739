"""The ``warroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaConnectionError

from connectors.kafka_security import KafkaAccessRefused, explain_refusal
from schemas.registry import RegistryError
from schemas.topics import TAILABLE

from .settings import Settings

if TYPE_CHECKING:
    from connectors.settings import IntakeSettings
    from schemas.topics import Topic


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except (KafkaAccessRefused, KafkaConnectionError) as failed:
        # wrong credentials or certificate: one line, no traceback
        reason = str(failed) if isinstance(failed, KafkaAccessRefused) else _refusal()
        if reason is None:
            raise
        command = (list(argv) if argv is not None else sys.argv[1:])[:1]
        print(f"warroom {' '.join(command)}: not starting: {reason}", file=sys.stderr)
        return 3
    except RegistryError as refused:  # a schema the registry refuses, or no registry
        command = (list(argv) if argv is not None else sys.argv[1:])[:1]
        print(f"warroom {' '.join(command)}: not starting: {refused}", file=sys.stderr)
        return 3
    return result


def _refusal() -> str | None:
    """Why the brokers refuse this process's Kafka clients, if they do."""
    settings = Settings()
    return asyncio.run(explain_refusal(settings.bootstrap_servers, settings.kafka_security()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warroom",
        description="Event-streaming intervention engine. Settings come from WARROOM_* "
        "environment variables (e.g. WARROOM_BOOTSTRAP_SERVERS).",
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    worker = commands.add_parser("worker", help="run a stream worker")
    worker.add_argument("--loglevel", default="WARNING")
    worker.set_defaults(run=_worker)

    topics = commands.add_parser("topics", help="create Warroom's topics")
    topics.set_defaults(run=_topics)

    gate = commands.add_parser("gate", help="the pre-send compliance gate")
    gate_commands = gate.add_subparsers(metavar="ACTION", required=True)
    gate_serve = gate_commands.add_parser("serve", help="judge message drafts over HTTP")
    gate_serve.add_argument("--host", default="127.0.0.1")
    gate_serve.add_argument("--port", type=int, default=8090)
    gate_serve.set_defaults(run=_gate_serve)

    chat = commands.add_parser("chat", help="the chat connector")
    chat_commands = chat.add_subparsers(metavar="ACTION", required=True)
    serve = chat_commands.add_parser("serve", help="accept chat messages over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(run=_chat_serve)
    send = chat_commands.add_parser("send", help="publish a JSONL file of chat messages")
    send.add_argument("file", type=Path)
    for command in (serve, send):
        command.add_argument(
            "--instance-id",
            default=None,
            help="names this replica's Kafka producers (default: APP_ID-chat-...-HOSTNAME; "
            "each producer adds a random suffix)",
        )
    send.set_defaults(run=_chat_send)

    from connectors.email_service import add_email_commands

    add_email_commands(
        commands.add_parser("email", help="the email connector: .eml and mbox files, IMAP"),
        lambda args: _file_connector_sinks(args, "email"),
    )

    crm = commands.add_parser("crm", help="CRM changes in (Debezium), interventions out (webhook)")
    crm_commands = crm.add_subparsers(metavar="ACTION", required=True)
    changes = crm_commands.add_parser("changes", help="read Debezium topics into touchpoints")
    changes.add_argument("--mapping", type=Path, required=True, help="YAML: tables and columns")
    changes.add_argument("--topic", dest="topics", action="append", required=True)
    changes.add_argument("--group", default=None, help="default: APP_ID-crm-changes")
    changes.add_argument("--instance-id", default=None)
    changes.set_defaults(run=_crm_changes)
    crm_sink = crm_commands.add_parser("sink", help="post interventions to a CRM webhook")
    crm_sink.add_argument("--url", required=True, help="the CRM's webhook")
    crm_sink.add_argument("--group", default=None, help="default: APP_ID-crm-sink")
    crm_sink.add_argument("--callback", default="127.0.0.1:8081", help="HOST:PORT, '' for none")
    crm_sink.add_argument("--token-file", type=Path, default=None, help="bearer token for the CRM")
    crm_sink.add_argument("--callback-token-file", type=Path, default=None)
    crm_sink.add_argument("--max-in-flight", type=int, default=8)
    crm_sink.add_argument("--max-attempts", type=int, default=None, help="default: no limit")
    crm_sink.set_defaults(run=_crm_sink)

    _add_mapping_commands(commands)

    rules = commands.add_parser("rules", help="check and publish rule bundles")
    rules_commands = rules.add_subparsers(metavar="ACTION", required=True)
    validate = rules_commands.add_parser("validate", help="compile bundles, report every problem")
    validate.add_argument("files", type=Path, nargs="+")
    validate.set_defaults(run=_rules_validate)
    push = rules_commands.add_parser(
        "push",
        help="validate a bundle, check its version is above the running one, then publish it",
    )
    push.add_argument("file", type=Path)
    push.set_defaults(run=_rules_push)
    delete = rules_commands.add_parser("delete", help="stop a running bundle on every worker")
    delete.add_argument("name", help="the bundle's name (its `bundle:` field)")
    delete.set_defaults(run=_rules_delete)

    explain = commands.add_parser(
        "explain", help="a customer's state and why each rule did or did not fire"
    )
    explain.add_argument("customer_id")
    explain.add_argument("--url", default="http://127.0.0.1:6066", help="the worker's web address")
    explain.set_defaults(run=_explain)

    profile = commands.add_parser(
        "profile", help="a customer's purchases, totals, tier and benefits, for store staff"
    )
    profile.add_argument("customer_id")
    profile.add_argument("--url", default="http://127.0.0.1:6066", help="the worker's web address")
    profile.set_defaults(run=_profile)

    top = commands.add_parser(
        "top", help="the customers with the highest score, across every worker's partitions"
    )
    top.add_argument("--score", required=True, help="a score a running bundle declares")
    top.add_argument("--k", type=int, default=5, help="how many (1 to 50)")
    top.add_argument("--rep", default=None, help="only this owner rep's customers")
    top.add_argument("--team", default=None, help="only customers of reps this manager manages")
    top.set_defaults(run=_top)

    tail = commands.add_parser("tail", help="print a stream readably as it arrives")
    tail.add_argument("stream", choices=[t.name for t in TAILABLE])
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=None, help="stop after this many records")
    tail.set_defaults(run=_tail)

    audit = commands.add_parser("audit", help="verify the audit chains, export a customer's trail")
    audit_commands = audit.add_subparsers(metavar="ACTION", required=True)
    audit_verify = audit_commands.add_parser(
        "verify", help="walk every chain; name the first broken record (exit 1 if any)"
    )
    audit_verify.set_defaults(run=_audit_verify)
    audit_export = audit_commands.add_parser(
        "export", help="a customer's audit records as JSON lines, then a verification summary"
    )
    audit_export.add_argument("--customer", required=True, help="the customer_id")
    audit_export.add_argument("--output", type=Path, default=None, help="default: stdout")
    audit_export.set_defaults(run=_audit_export)
    for command in (audit_verify, audit_export):
        command.add_argument("--bootstrap", default=None, help="default: WARROOM_BOOTSTRAP_SERVERS")
        command.add_argument("--topic-prefix", default=None, help="default: WARROOM_TOPIC_PREFIX")
        command.add_argument("--app-id", default=None, help="names the heads topic")
        command.add_argument(
            "--heads", action="store_true", help="check against the chain heads the worker stored"
        )
        command.add_argument(
            "--heads-topic", default=None, help="default: APP_ID-audit-heads-changelog"
        )
        command.add_argument(
            "--trimmed-ok", action="store_true", help="verify partitions retention trimmed"
        )

    from connectors.commands import add_file_connector_commands

    add_file_connector_commands(commands, _file_connector_sinks)

    demo = commands.add_parser("demo", help="post the built-in demo conversation")
    demo.add_argument("--url", default="http://127.0.0.1:8080")
    demo.add_argument(
        "--gate", default=None, help="also ask the compliance gate at this URL about two drafts"
    )
    demo.add_argument(
        "--files",
        type=Path,
        default=None,
        help="also write sample files for the usage, POS, email and meeting connectors here",
    )
    demo.set_defaults(run=_demo)
    return parser


def _worker(args: argparse.Namespace) -> int:
    from faust import Worker

    from .app import create_app
    from .patches import PatchError, check
    from .settings import Guarantee
    from .topics import ensure_topics

    settings = Settings()
    warroom = create_app(settings)
    try:
        check(warroom.app, settings.processing_guarantee is Guarantee.EXACTLY_ONCE)
    except PatchError as refused:
        print(f"warroom worker: not starting: {refused}", file=sys.stderr)
        return 3
    asyncio.run(ensure_topics(settings))
    from schemas.registry import WORKER_WRITES

    _use_registry(settings, *WORKER_WRITES)
    worker = Worker(warroom.app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0


def _topics(args: argparse.Namespace) -> int:
    from .topics import ensure_topics

    created = asyncio.run(ensure_topics(Settings()))
    print("created: " + (", ".join(created) if created else "nothing (all present)"))
    return 0


def _intake_settings(args: argparse.Namespace, role: str) -> IntakeSettings:
    import socket

    from connectors.settings import IntakeSettings
    from schemas.topics import TOUCHPOINTS

    settings = Settings()
    instance = args.instance_id or f"{settings.app_id}-{role}-{socket.gethostname()}"
    return IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id=instance,
        security=settings.kafka_security(),
        schema_registry=settings.schema_registry(),
        tracing=settings.tracing_settings(role),
    )


def _use_registry(settings: Settings, *writes: Topic) -> None:
    """With a schema registry configured, register (after a compatibility check) the
    schemas of ``writes`` and frame Avro records the Confluent way (schemas.registry)."""
    registry = settings.schema_registry()
    if registry is not None:
        from schemas.registry import topic_writes, use_registry

        use_registry(registry, topic_writes(settings.topic_prefix, writes))


def _file_connector_sinks(args: argparse.Namespace, role: str) -> tuple[IntakeSettings, str]:
    from schemas.topics import DLQ

    return _intake_settings(args, role), Settings().topic(DLQ)


def _gate_serve(args: argparse.Namespace) -> int:
    from .gate_service import serve

    settings = Settings()
    from schemas.topics import MESSAGE_DRAFTS

    _use_registry(settings, MESSAGE_DRAFTS)
    token = None if settings.gate_token is None else settings.gate_token.get_secret_value()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, args.host, args.port, token))
    return 0


def _chat_serve(args: argparse.Namespace) -> int:
    from connectors.chat_service import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(_intake_settings(args, "chat-http"), args.host, args.port))
    return 0


def _chat_send(args: argparse.Namespace) -> int:
    from connectors.chat import InvalidChatInput, read_jsonl
    from connectors.chat_service import publish_file

    try:
        messages = read_jsonl(args.file)
    except InvalidChatInput as exc:
        for problem in exc.problems:
            print(
                f"{args.file}:{problem['line']}: {problem['field']}: {problem['message']}",
                file=sys.stderr,
            )
        print(f"nothing published: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    count = asyncio.run(publish_file(_intake_settings(args, "chat-file"), messages))
    print(f"published {count} touchpoint(s)")
    return 0


def _crm_changes(args: argparse.Namespace) -> int:
    from connectors.crm_changes import ChangeReaderSettings, InvalidMapping, read_mapping, serve
    from schemas.topics import DLQ

    try:
        mapping = read_mapping(args.mapping)
    except InvalidMapping as invalid:
        print("\n".join(invalid.problems), file=sys.stderr)
        return 2
    settings = Settings()
    reader = ChangeReaderSettings(
        intake=_intake_settings(args, "crm-changes"),
        topics=tuple(args.topics),
        group_id=args.group or f"{settings.app_id}-crm-changes",
        dlq_topic=settings.topic(DLQ),
    )
    asyncio.run(serve(reader, mapping))
    return 0


def _crm_sink(args: argparse.Namespace) -> int:
    from connectors.crm_sink import CrmSinkSettings, serve
    from schemas.topics import DLQ, FEEDBACK, INTERVENTIONS

    def token(path: Path | None) -> str | None:
        return None if path is None else path.read_text(encoding="utf-8").strip()

    settings = Settings()
    _use_registry(settings, DLQ)
    host, _, port = args.callback.rpartition(":")
    sink = CrmSinkSettings(
        bootstrap_servers=settings.bootstrap_servers,
        security=settings.kafka_security(),
        interventions_topic=settings.topic(INTERVENTIONS),
        feedback_topic=settings.topic(FEEDBACK),
        dlq_topic=settings.topic(DLQ),
        partitions=settings.partitions,
        group_id=args.group or f"{settings.app_id}-crm-sink",
        webhook_url=args.url,
        webhook_token=token(args.token_file),
        callback_token=token(args.callback_token_file),
        max_in_flight=args.max_in_flight,
        max_attempts=args.max_attempts,
    )
    asyncio.run(serve(sink, (host, int(port)) if args.callback else None))
    return 0


def _rules_validate(args: argparse.Namespace) -> int:
    from engine.bundle import InvalidBundle, load_bundle

    failed = 0
    for path in args.files:
        try:
            bundle = load_bundle(path.read_text(encoding="utf-8"), str(path))
        except InvalidBundle as invalid:
            failed += 1
            for problem in invalid.problems:
                print(problem, file=sys.stderr)
            continue
        print(f"{path}: bundle {bundle.name} v{bundle.version}, {len(bundle.rules)} rule(s): ok")
    return 2 if failed else 0


def _rules_push(args: argparse.Namespace) -> int:
    from engine.bundle import InvalidBundle

    from .rules_feed import MissingTopics
    from .rules_push import push_bundle

    try:
        text = args.file.read_text(encoding="utf-8")
        name, version, where = asyncio.run(push_bundle(Settings(), text, str(args.file)))
    except InvalidBundle as invalid:
        for problem in invalid.problems:
            print(problem, file=sys.stderr)
        print("nothing pushed: the running version stays", file=sys.stderr)
        return 2
    except MissingTopics as missing:
        print(f"nothing pushed: {missing}", file=sys.stderr)
        return 2
    print(f"pushed bundle {name} v{version} to {where}; workers apply it within seconds")
    return 0


def _rules_delete(args: argparse.Namespace) -> int:
    from engine.rulebook import deletion_refused

    from .rules_push import delete_bundle

    refused = deletion_refused(args.name)
    if refused is not None:
        print(refused, file=sys.stderr)
        return 2
    where = asyncio.run(delete_bundle(Settings(), args.name))
    print(f"deleted bundle {args.name} at {where}; workers stop its rules within seconds")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain_cli import show_customer

    return asyncio.run(show_customer(args.url, args.customer_id, Settings().admin_token))


def _profile(args: argparse.Namespace) -> int:
    from .explain_cli import show_profile

    return asyncio.run(show_profile(args.url, args.customer_id, Settings().admin_token))


def _top(args: argparse.Namespace) -> int:
    from .scoring_leaders import show_top

    return asyncio.run(show_top(Settings(), args.score, args.k, args.rep, args.team))


def _tail(args: argparse.Namespace) -> int:
    from .tail import tail

    settings = Settings()
    _use_registry(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(settings, args.stream, args.from_beginning, args.max))
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from .audit_cli import run_verify

    return run_verify(args)


def _audit_export(args: argparse.Namespace) -> int:
    from .audit_cli import run_export

    return run_export(args)


def _demo(args: argparse.Namespace) -> int:
    import uuid
    from datetime import UTC, datetime

    from connectors.demo import post_demo, post_drafts, write_sample_files

    status = asyncio.run(post_demo(args.url))
    if status == 0 and args.gate:
        status = asyncio.run(post_drafts(args.gate))
    if status == 0 and args.files is not None:
        run = uuid.uuid4().hex[:6]
        for source, path in write_sample_files(args.files, datetime.now(UTC), run).items():
            print(f"demo: wrote the {source} sample to {path}", flush=True)
    return status


def _add_mapping_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mapping = commands.add_parser("mapping", help="the no-code JSON mapping connector")
    mapping_commands = mapping.add_subparsers(metavar="ACTION", required=True)
    check = mapping_commands.add_parser("check", help="load mappings, report every problem")
    check.add_argument("files", nargs="+")
    check.set_defaults(run=lambda a: _mapping("check_files", a.files))
    dry = mapping_commands.add_parser("map", help="print the touchpoints a JSON file maps to")
    dry.add_argument("--mapping", required=True)
    dry.add_argument("input", help="a JSON or JSON Lines file")
    dry.set_defaults(run=lambda a: _mapping("dry_run", a.mapping, a.input))
    follow = mapping_commands.add_parser("follow", help="map a Kafka topic of JSON messages")
    follow.add_argument("--mapping", required=True)
    follow.add_argument("--topic", required=True, help="the topic's full name")
    follow.add_argument("--group", default=None, help="default: APP_ID-mapping-<mapping file>")
    follow.add_argument("--from-latest", action="store_true", help="a new group starts at the end")
    webhook = commands.add_parser("webhook", help="signed JSON webhooks, mapped by YAML mappings")
    serve_hooks = webhook.add_subparsers(metavar="ACTION", required=True).add_parser(
        "serve", help="POST /v1/webhooks/NAME; secrets from WARROOM_WEBHOOK_SECRET_<NAME>"
    )
    serve_hooks.add_argument("--source", action="append", default=[], help="NAME=MAPPING.yaml")
    wecom = commands.add_parser("wecom", help="the WeCom callback connector")
    serve_wecom = wecom.add_subparsers(metavar="ACTION", required=True).add_parser(
        "serve", help="the callback URL; WARROOM_WECOM_TOKEN, _AES_KEY and _CORP_ID"
    )
    for command, port in ((serve_hooks, 8081), (serve_wecom, 8082)):
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=port)
    for command in (follow, serve_hooks, serve_wecom):
        command.add_argument("--instance-id", default=None, help="names this replica's producers")
    follow.set_defaults(run=_mapping_follow)
    serve_hooks.set_defaults(run=_webhook_serve)
    serve_wecom.set_defaults(run=_wecom_serve)


def _mapping(function: str, *arguments: object) -> int:
    import connectors.mapping_service

    result: int = getattr(connectors.mapping_service, function)(*arguments)
    return result


def _mapping_follow(args: argparse.Namespace) -> int:
    from connectors.mapping_service import FollowSettings, run_follow
    from schemas.topics import DLQ

    settings = Settings()
    group = args.group or f"{settings.app_id}-mapping-{Path(args.mapping).stem}"
    intake = _intake_settings(args, "mapping")
    follow = FollowSettings(
        intake, args.topic, group, settings.topic(DLQ), from_beginning=not args.from_latest
    )
    return run_follow(follow, args.mapping)


def _webhook_serve(args: argparse.Namespace) -> int:
    intake = _intake_settings(args, "webhook")
    return _mapping("run_webhooks", intake, args.source, args.host, args.port, os.environ)


def _wecom_serve(args: argparse.Namespace) -> int:
    from connectors.wecom import run_callback

    return run_callback(_intake_settings(args, "wecom"), args.host, args.port, os.environ)


if __name__ == "__main__":
    sys.exit(main())
