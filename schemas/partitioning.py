"""Which partition a customer's records live on: the contract every producer follows."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)
def customer_partition(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by ``customer_id``."""
    hashed: int = murmur2(customer_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions
