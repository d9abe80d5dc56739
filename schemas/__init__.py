"""Wire contracts: pydantic models (``schemas.models``), Avro schemas (``schemas/avro``),
single-object Avro codecs (``schemas.codec``) and Faust codec instances
(``schemas.faust_codec``).

Nothing is imported here, so ``import schemas.models`` pulls in pydantic only, never
fastavro or faust.
"""
