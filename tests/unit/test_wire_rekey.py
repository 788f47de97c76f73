"""Key chunks in heartbeats (docs/protocol.md §11.2): parse, split, join, and refuse garbage."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import MalformedMessage
from vigil.wire.rekey import KeyChunk, assemble, chunk, key_id

TEXT = base64.b64encode(bytes(range(32))).decode()  # an X25519 key's 44 characters


def test_a_key_split_into_chunks_joins_again_in_any_order() -> None:
    parts, offset = {}, 0
    while offset < len(TEXT):
        part = chunk(TEXT, offset=offset, room=10)
        assert part is not None
        assert KeyChunk.parse(part.to_text()) == part
        parts[part.offset] = part.data
        offset += len(part.data)
    assert len(parts) == 5
    assert assemble(key_id(TEXT), len(TEXT), dict(reversed(parts.items()))) == TEXT
    del parts[10]
    assert assemble(key_id(TEXT), len(TEXT), parts) is None  # a chunk still missing


def test_chunks_that_disagree_or_do_not_match_the_digest_are_not_a_key() -> None:
    other = "B" + TEXT[1:]
    assert assemble(key_id(TEXT), len(TEXT), {0: other}) is None  # digest mismatch
    assert assemble(key_id(TEXT), len(TEXT), {0: TEXT, 1: "X"}) is None  # overlap disagrees
    assert assemble(key_id(TEXT), len(TEXT), {40: TEXT[40:] + "AAAA"}) is None  # past the end


def test_no_room_means_no_chunk() -> None:
    assert chunk(TEXT, offset=0, room=0) is None
    assert chunk(TEXT, offset=len(TEXT), room=10) is None


@pytest.mark.parametrize(
    "text",
    [
        None, 42, "", "0011223344556677", "0011223344556677:0:44:",
        "0011223344556677:-1:44:AAAA", "0011223344556677:01:44:AAAA",
        "0011223344556677:0:0:AAAA", "0011223344556677:0:44:AA AA",
        "0011223344556677:0:44:AA\"A", "00112233445566GG:0:44:AAAA",
        "0011223344556677:42:44:AAAA", "0011223344556677:0:9999:AAAA",
        "0011223344556677:0:44:" + "A" * 5000,
    ],
)  # fmt: skip
def test_garbage_chunks_are_refused(text: object) -> None:
    with pytest.raises(MalformedMessage):
        KeyChunk.parse(text)


@given(st.text(max_size=120))
def test_arbitrary_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        part = KeyChunk.parse(text)
    except MalformedMessage:
        return
    assert part.to_text() == text
