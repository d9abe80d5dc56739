"""Faust codecs, given to topics as instances (never registered by name).

    app.topic("interventions", value_serializer=InterventionCodec())

Leave the topic's ``value_type`` unset: these codecs already return pydantic models,
and Faust would otherwise try to rebuild its own Record from them. A decode failure
reaches the stream as Faust's ``ValueDecodeError`` whose ``__cause__`` is the
``schemas.errors.SchemaError`` with the reason code for the dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from faust.serializers.codecs import Codec
from faust.types.codecs import CodecT
from pydantic import BaseModel

from schemas.codec import (
    ModelCodec,
    dead_letter_codec,
    decode_touchpoints,
    encode_touchpoint,
    encode_touchpoint_batch,
    intervention_codec,
)
from schemas.errors import EncodeError
from schemas.models import DeadLetter, InterventionCommand, TouchpointEvent

__all__ = ["AvroModelCodec", "DeadLetterCodec", "InterventionCodec", "TouchpointCodec"]

M = TypeVar("M", bound=BaseModel)


class AvroModelCodec(Codec, Generic[M]):
    """A pydantic model <-> Avro single-object bytes, as a Faust codec."""

    def __init__(
        self,
        model_codec: ModelCodec[M],
        children: tuple[CodecT, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(children=children, **kwargs)
        self.model_codec = model_codec

    def _dumps(self, obj: Any) -> bytes:
        model = self.model_codec.model
        if not isinstance(obj, model):
            msg = f"expected a {model.__name__} to encode, found {type(obj).__name__}"
            raise EncodeError(msg)
        return self.model_codec.encode(obj)

    def _loads(self, s: bytes) -> M:
        return self.model_codec.decode(s)

    def clone(self, *children: CodecT) -> CodecT:
        return type(self)(self.model_codec, children=self.children + children, **self.kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_codec.avro.reader_schema.label})"


class InterventionCodec(AvroModelCodec[InterventionCommand]):
    def __init__(self, children: tuple[CodecT, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(intervention_codec(), children=children, **kwargs)

    def clone(self, *children: CodecT) -> CodecT:
        return type(self)(children=self.children + children, **self.kwargs)


class DeadLetterCodec(AvroModelCodec[DeadLetter]):
    def __init__(self, children: tuple[CodecT, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(dead_letter_codec(), children=children, **kwargs)

    def clone(self, *children: CodecT) -> CodecT:
        return type(self)(children=self.children + children, **self.kwargs)


class TouchpointCodec(Codec):
    """The ``touchpoints`` topic: one event or a batch per record.

    ``dumps`` takes a TouchpointEvent (written as a TouchpointEvent record) or a
    sequence of them (one TouchpointBatch record); ``loads`` always returns a list.
    """

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, TouchpointEvent):
            return encode_touchpoint(obj)
        if isinstance(obj, Sequence) and all(isinstance(e, TouchpointEvent) for e in obj):
            return encode_touchpoint_batch(obj)
        msg = (
            "expected a TouchpointEvent or a sequence of them to encode, "
            f"found {type(obj).__name__}"
        )
        raise EncodeError(msg)

    def _loads(self, s: bytes) -> list[TouchpointEvent]:
        return decode_touchpoints(s)

    def __repr__(self) -> str:
        return "TouchpointCodec()"
