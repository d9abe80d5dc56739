"""Errors raised by the schemas package.

One root, small leaves. Every error carries a short machine ``reason`` code that the
worker copies into the dead letter it writes, and a message naming what was expected
and what was found::

    SchemaError                      (root, never raised itself)
    ├── SchemaDefinitionError        "bad_schema"           an .avsc file is not valid Avro
    ├── EncodeError                  "unencodable"          a record does not fit its schema
    ├── UndecodableError             "undecodable"
    │   ├── TruncatedMessageError        shorter than the 10-byte single-object header
    │   ├── MarkerError                  first two bytes are not C3 01
    │   └── CorruptBodyError             the body does not parse with the writer schema
    ├── UnknownSchemaError           "unknown_schema"       writer fingerprint not known here
    │   └── UnknownSchemaIdError         Confluent framing: schema id unknown or of another type
    ├── IncompatibleSchemaError      "incompatible_schema"  writer cannot resolve into reader
    └── InvalidRecordError           "invalid_event"        decoded, but fails model validation
"""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by :mod:`schemas`."""

    reason: str = "schema_error"


class SchemaDefinitionError(SchemaError):
    reason = "bad_schema"


class EncodeError(SchemaError):
    reason = "unencodable"


class UndecodableError(SchemaError):
    reason = "undecodable"


class TruncatedMessageError(UndecodableError):
    pass


class MarkerError(UndecodableError):
    pass


class CorruptBodyError(UndecodableError):
    pass


class UnknownSchemaError(SchemaError):
    """The message names a writer schema this process does not know.

    Operators: deploy a reader that ships the producer's schema (or roll the producer
    back). The messages stay in the dead-letter topic and can be replayed.
    """

    reason = "unknown_schema"

    def __init__(self, message: str, fingerprint: int) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class UnknownSchemaIdError(UnknownSchemaError):
    """A Confluent-framed message names a schema id the registry does not have, or one
    of another record type than the reader's."""

    def __init__(self, message: str, schema_id: int) -> None:
        super().__init__(message, schema_id)
        self.schema_id = schema_id


class IncompatibleSchemaError(SchemaError):
    """The writer schema is known but does not resolve into the reader schema."""

    reason = "incompatible_schema"


class InvalidRecordError(SchemaError):
    reason = "invalid_event"
