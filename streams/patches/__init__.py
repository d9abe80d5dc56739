"""Every place Warroom reaches into Faust or aiokafka internals, in one package.

Each patch says what it replaces and why (see its module). The versions they were
written against are bounded in pyproject.toml, and :func:`check` runs when a worker
starts: it verifies that every private name a patch relies on exists in the installed
libraries and that every patch is installed on the app, and the worker refuses to
start otherwise. A library upgrade therefore cannot turn a patch into a silent no-op.

======================  =============================================================
patch                   replaces
======================  =============================================================
exactly_once_commit     Faust's TransactionManager.commit (drain, idle producers),
                        _start_transactions (producers kept through a rebalance),
                        on_rebalance (a kept partition's output written after its
                        last commit is aborted, its acks dropped, its tables
                        recovered again) and the transactional producers' timeout
commit_lock             Faust's Consumer._commit_tps (no commit inside a batch),
                        on_partitions_revoked (commit before the acks are forgotten),
                        ack (a record a stream skipped is not counted), _new_offset
                        and _add_gap (a commit passes transaction markers, never a
                        delivered record: see offsets), and its consumer thread (seek
                        uncommitted partitions, true highwaters, no "aborted" tail
                        below them in recovery)
lossless_resume         FlowControlEvent.resume (records what a resume drops), and the
                        consumer's getmany, perform_seek and seek (the drain loop
                        re-reads it, in the consumer thread, superseded by Faust's own
                        seek; getmany and the seeks also record the offsets never
                        delivered, for offsets)
table_store             direct writes to the memory store (``data``, ``_key_partition``)
rocksdb_store           writes to Faust's RocksDB store after each commit, with the
                        changelog offset (``_db_for_partition``, ``offset_key``)
======================  =============================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from .flow import install_lossless_resume, is_lossless_resume_installed
from .transactions import (
    ExactlyOnceTransactions,
    install_commit_lock,
    install_exactly_once_commit,
    is_commit_lock_installed,
    is_exactly_once_installed,
)

__all__ = [
    "REQUIRED_INTERNALS",
    "TESTED",
    "ExactlyOnceTransactions",
    "PatchError",
    "check",
    "install_commit_lock",
    "install_exactly_once_commit",
    "install_lossless_resume",
    "missing_internals",
]


class PatchError(RuntimeError):
    """A patch of Faust or aiokafka internals is missing or no longer applies."""


@dataclass(frozen=True, slots=True)
class Internal:
    """A private name a patch relies on: ``attribute`` of ``owner`` in ``module``."""

    module: str
    owner: str
    attribute: str
    patch: str

    def present(self) -> bool:
        try:
            found: Any = importlib.import_module(self.module)
        except ImportError:
            return False
        for part in self.owner.split("."):
            found = getattr(found, part, None)
            if found is None:
                return False
        return hasattr(found, self.attribute)


REQUIRED_INTERNALS: tuple[Internal, ...] = (
    Internal(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "verify_event_path",
        "commit_lock",
    ),
    Internal(
        "aiokafka.consumer.subscription_state",
        "TopicPartitionState",
        "has_valid_position",
        "commit_lock",
    ),
    Internal("faust.transport.consumer", "TransactionManager", "commit", "exactly_once_commit"),
    Internal("faust.transport.consumer", "Consumer", "_commit_tps", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "_new_offset", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "ack", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "_add_gap", "commit_lock"),
    Internal("intervaltree", "IntervalTree", "at", "commit_lock"),
    Internal("intervaltree", "IntervalTree", "chop", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "seek", "lossless_resume"),
    Internal("faust.types.tuples", "Message", "tracked", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "on_partitions_revoked", "commit_lock"),
    Internal(
        "faust.transport.consumer", "Consumer", "_filter_tps_with_pending_acks", "commit_lock"
    ),
    Internal(
        "faust.transport.consumer",
        "TransactionManager",
        "_start_transactions",
        "exactly_once_commit",
    ),
    Internal(
        "faust.transport.drivers.aiokafka",
        "Producer",
        "maybe_begin_transaction",
        "exactly_once_commit",
    ),
    Internal(
        "faust.transport.consumer", "TransactionManager", "on_rebalance", "exactly_once_commit"
    ),
    Internal("faust.transport.drivers.aiokafka", "Producer", "_trn_locks", "exactly_once_commit"),
    Internal(
        "faust.transport.drivers.aiokafka",
        "Producer",
        "_transaction_producers",
        "exactly_once_commit",
    ),
    Internal("faust.tables.recovery", "Recovery", "revoke", "exactly_once_commit"),
    Internal(
        "faust.assignor.partition_assignor",
        "PartitionAssignor",
        "is_standby",
        "exactly_once_commit",
    ),
    Internal(
        "aiokafka.producer.producer", "AIOKafkaProducer", "abort_transaction", "exactly_once_commit"
    ),
    Internal(
        "faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "position", "commit_lock"
    ),
    Internal("faust.tables.recovery", "Recovery", "_slurp_changelogs", "commit_lock"),
    Internal(
        "faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_highwaters", "commit_lock"
    ),
    Internal(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_ensure_consumer",
        "commit_lock",
    ),
    Internal(
        "faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "call_thread", "commit_lock"
    ),
    Internal(
        "faust.transport.drivers.aiokafka", "Producer", "_settings_extra", "exactly_once_commit"
    ),
    Internal("faust.transport.drivers.aiokafka", "Consumer", "_new_consumer_thread", "commit_lock"),
    Internal("faust.tables.base", "Collection", "_new_changelog_topic", "table_store"),
    Internal("faust.stores.rocksdb", "Store", "_db_for_partition", "rocksdb_store"),
    Internal("faust.stores.rocksdb", "Store", "offset_key", "rocksdb_store"),
    Internal("faust.stores.rocksdb", "Store", "persisted_offset", "rocksdb_store"),
    Internal("faust.types.tuples", "Message", "acked", "batches"),
    Internal("faust.streams", "Stream", "take_events", "batches"),
    Internal("aiokafka.producer.producer", "AIOKafkaProducer", "create_batch", "writer"),
    Internal("aiokafka.producer.producer", "AIOKafkaProducer", "send_batch", "writer"),
    Internal("aiokafka.consumer.consumer", "AIOKafkaConsumer", "seek_to_committed", "commit_lock"),
    Internal("faust.transport.consumer", "Consumer", "_drain_messages", "lossless_resume"),
    Internal("faust.transport.consumer", "Consumer", "getmany", "lossless_resume"),
    Internal("faust.transport.consumer", "Consumer", "perform_seek", "lossless_resume"),
    Internal("faust.types.tuples", "Message", "generation_id", "lossless_resume"),
    Internal("mode.utils.queues", "FlowControlEvent", "_queues", "lossless_resume"),
    Internal("mode.utils.queues", "ThrowableQueue", "clear", "lossless_resume"),
    Internal(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_ensure_consumer",
        "lossless_resume",
    ),
    Internal(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "call_thread",
        "lossless_resume",
    ),
)
"""Checked at start-up; ``Message.acked`` is a slot, so hasattr on the class finds it."""

TESTED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}
"""The versions the patches were written and tested against (pyproject.toml bounds them)."""


def missing_internals(internals: Iterable[Internal] = REQUIRED_INTERNALS) -> list[str]:
    return [
        f"{i.module}.{i.owner}.{i.attribute} (needed by {i.patch})"
        for i in internals
        if not i.present()
    ]


def check(app: Any, exactly_once: bool) -> None:
    """Refuse to run unless every patch applies to the installed libraries and is
    installed on ``app``; the error names each problem and the tested versions."""
    problems = missing_internals()
    if exactly_once and not is_exactly_once_installed(app):
        problems.append("exactly_once_commit is not installed on the app")
    if not is_commit_lock_installed(app):
        problems.append("commit_lock is not installed on the app")
    if not is_lossless_resume_installed(app):
        problems.append("lossless_resume is not installed on the app")
    if problems:
        installed = ", ".join(f"{name} {_installed(name)}" for name in TESTED)
        tested = ", ".join(f"{name} {v}" for name, v in TESTED.items())
        raise PatchError(
            "Warroom's patches of Faust/aiokafka internals do not apply: "
            + "; ".join(problems)
            + f". Installed: {installed}; tested with: {tested}."
        )


def _installed(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"
