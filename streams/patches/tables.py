"""Direct access to a Faust table's in-memory store, and codec instances for tables.

The worker writes a batch's changed values straight into the store (and their
changelog records into its own record batches, see streams.writer) instead of
going through ``table[key] = value``, which costs a changelog send per write.
That needs two private names of Faust's memory store: ``data`` (the dict) and
``_key_partition`` (which partition a key's changelog record belongs to, used
when partitions are revoked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

import faust
from faust.serializers.codecs import Codec

V = TypeVar("V")


def use_codecs(table: faust.Table[str, Any], key: Codec, value: Codec) -> None:
    """Give ``table`` codec instances instead of registry names.

    Faust picks a table's codecs from its key and value types and builds the changelog
    topic with them as soon as the table is declared, so set ours and rebuild the topic
    (same name) before anything subscribes to it.
    """
    table.key_serializer = key
    table.value_serializer = value
    table.changelog_topic = table._new_changelog_topic()


class TableStore(Generic[V]):
    """Typed get/put/delete on a table's in-memory store, with each key's partition."""

    def __init__(self, table: faust.Table[str, Any], default_partition: Callable[[str], int]):
        self.table = table
        self._default_partition = default_partition

    @property
    def _store(self) -> Any:
        return self.table.data

    @property
    def changelog(self) -> str:
        name: str = self.table.changelog_topic.get_topic_name()
        return name

    def get(self, key: str) -> V | None:
        return cast(V | None, self._store.data.get(key))

    def put(self, key: str, partition: int, value: V) -> None:
        store = self._store
        store.data[key] = value
        store._key_partition[key] = partition

    def delete(self, key: str) -> None:
        store = self._store
        store.data.pop(key, None)
        store._key_partition.pop(key, None)

    def roll_back(self, partitions: frozenset[int]) -> None:
        """Forget every key of ``partitions``: their uncommitted values were aborted, and
        recovery puts the committed ones back from the changelog."""
        store = self._store
        for key, _, _ in list(self.owned(partitions)):
            store.data.pop(key, None)
            store._key_partition.pop(key, None)

    def owned(self, partitions: frozenset[int]) -> Iterator[tuple[str, int, V]]:
        """(key, partition, value) of every stored key on one of ``partitions``."""
        store = self._store
        for key, value in list(store.data.items()):
            partition = store._key_partition.get(key)
            if partition is None:
                partition = self._default_partition(key)
            if partition in partitions:
                yield key, partition, value
