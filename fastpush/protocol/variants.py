"""Wire variants: how a connection's subprotocol makes it receive a send.

This is the one definition. The compiled fan-out (`fastpush/_fanout.pxd`) mirrors `Variant` as a
`cpdef enum` of the same name, so that its loop compares C integers;
tests/fanout/test_variants.py checks that the two agree member by member.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["RELIABLE_VARIANTS", "Variant"]


class Variant(IntEnum):
    RAW = 0  # no subprotocol: the payload itself, in a text or binary frame
    JSON = 1  # json.webpubsub.azure.v1: a JSON message envelope
    JSON_RELIABLE = 2  # json.reliable.webpubsub.azure.v1: the envelope with a sequenceId
    PROTOBUF = 3  # protobuf.webpubsub.azure.v1: a DownstreamMessage
    PROTOBUF_RELIABLE = 4  # protobuf.reliable.webpubsub.azure.v1: the message with a sequence_id


# Variants whose messages are numbered, kept until acknowledged, and resent on recovery.
RELIABLE_VARIANTS: Final[frozenset[Variant]] = frozenset({Variant.JSON_RELIABLE, Variant.PROTOBUF_RELIABLE})
