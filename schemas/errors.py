"""Errors of the wire contract. Every integrity failure says where it happened."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by :mod:`schemas`."""


class UnknownSchema(SchemaError):
    """An entry names a schema fingerprint that this build does not know."""


class IncompatibleSchema(SchemaError):
    """A new schema version cannot read data written with an older one, or the reverse."""


class UnencodableRecord(SchemaError):
    """A record does not fit its schema (a bug in Ark, never in the data): the message names the schema
    and the field, never the values, which may be row data."""


class CorruptEntry(SchemaError):
    """An entry failed its integrity check (CRC-32C, missing header, undecodable Avro).

    The message and the attributes name the topic, partition, offset and source position,
    so that an operator (and the retransmit protocol) knows exactly which entry is bad.
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str = "?",
        partition: int = -1,
        offset: int = -1,
        source_position: str = "",
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.source_position = source_position
        where = f"{topic}[{partition}]@{offset}"
        if source_position:
            where += f" (source position {source_position})"
        super().__init__(f"corrupt entry at {where}: {reason}")


class InvalidChecksum(CorruptEntry):
    """The CRC-32C in the entry's headers does not match its payload bytes."""


class NotAuthentic(SchemaError):
    """A record that must be signed with the group's key is unsigned, or its signature does not match.

    ``reason`` is ``unsigned`` or ``bad-signature``; the record must be refused, logged and counted.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
