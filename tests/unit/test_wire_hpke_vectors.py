"""RFC 9180 Appendix A vectors through `cryptography`'s HPKE, as far as its API allows.

`cryptography` offers single-shot Base-mode HPKE only: no Auth/PSK modes, no
context (so only sequence number 0), no way to inject the ephemeral key (so no
known-answer test of encryption), and no AAD in the public API. What we can
check, we check: our suite is the RFC's suite, DeriveKeyPair's published keys
agree, and Base-mode sequence-0 ciphertexts decrypt to the published
plaintexts through the library's AAD-taking decrypt. Auth-mode vectors must
fail to decrypt in Base mode, which is why Vigil signs with Ed25519 instead.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import HPKE_VECTORS, data_file
from vigil.wire.keys import Suite

_AEADS = {1: hpke.AEAD.AES_128_GCM, 3: hpke.AEAD.CHACHA20_POLY1305}
# Underscore-named in `cryptography` (>= 48, which pyproject requires): if a release drops
# it, these tests must fail and say so, not quietly stop checking the RFC's ciphertexts.
_decrypt_with_aad = getattr(rust_openssl.hpke, "_decrypt_with_aad", None)


def _aad_decrypt() -> Any:
    if _decrypt_with_aad is None:
        pytest.fail("this cryptography has no hpke._decrypt_with_aad: the RFC 9180 "
                    "known-answer tests need another way to pass the AAD")  # fmt: skip
    return _decrypt_with_aad


def _vectors() -> list[Any]:
    return list(json.loads(data_file(HPKE_VECTORS).read_text()))


def _id(v: dict[str, Any]) -> str:
    mode = {0: "base", 2: "auth"}[v["mode"]]
    aead = {1: "aes128gcm", 3: "chacha20poly1305"}[v["aead_id"]]
    return f"{mode}-x25519-sha256-{aead}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vector" in metafunc.fixturenames:
        vectors = _vectors()
        metafunc.parametrize("vector", vectors, ids=[_id(v) for v in vectors])


def _suite(v: dict[str, Any]) -> hpke.Suite:
    assert (v["kem_id"], v["kdf_id"]) == (0x20, 1)
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, _AEADS[v["aead_id"]])


def test_our_base_suite_is_the_rfc_chacha_suite() -> None:
    chacha = [v for v in _vectors() if v["aead_id"] == 3 and v["mode"] == 0]
    assert len(chacha) == 1
    ours = Suite.X25519_CHACHA20.hpke
    v = chacha[0]
    ct = bytes.fromhex(v["enc"]) + bytes.fromhex(v["encryptions"][0]["ct"])
    sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["skRm"]))
    # Same suite object semantics: our suite decrypts the RFC's ciphertext (given its AAD).
    pt = _aad_decrypt()(
        ours, ct, sk, info=bytes.fromhex(v["info"]), aad=bytes.fromhex(v["encryptions"][0]["aad"])
    )
    assert pt == bytes.fromhex(v["encryptions"][0]["pt"])


def test_published_key_pairs_agree(vector: dict[str, Any]) -> None:
    for sk_field, pk_field in (("skRm", "pkRm"), ("skEm", "pkEm")):
        sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(vector[sk_field]))
        assert sk.public_key().public_bytes_raw().hex() == vector[pk_field]
    assert bytes.fromhex(vector["enc"]) == bytes.fromhex(vector["pkEm"])


def test_sequence_zero_decrypts(vector: dict[str, Any]) -> None:
    decrypt = _aad_decrypt()
    first = vector["encryptions"][0]
    assert first["sequence_number"] == 0
    ct = bytes.fromhex(vector["enc"]) + bytes.fromhex(first["ct"])
    sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(vector["skRm"]))
    args = {"info": bytes.fromhex(vector["info"]), "aad": bytes.fromhex(first["aad"])}
    if vector["mode"] == 0:
        assert decrypt(_suite(vector), ct, sk, **args) == bytes.fromhex(first["pt"])
    else:  # Auth mode binds the sender's key; Base-mode decryption must not accept it
        with pytest.raises(InvalidTag):
            decrypt(_suite(vector), ct, sk, **args)


def test_public_decrypt_binds_the_aad(vector: dict[str, Any]) -> None:
    """The public API uses an empty AAD, so it must refuse the vectors' ciphertexts."""
    first = vector["encryptions"][0]
    ct = bytes.fromhex(vector["enc"]) + bytes.fromhex(first["ct"])
    sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(vector["skRm"]))
    with pytest.raises(InvalidTag):
        _suite(vector).decrypt(ct, sk, info=bytes.fromhex(vector["info"]))


def test_info_is_bound() -> None:
    """Vigil binds its header through `info`: a different info must not decrypt."""
    sk = X25519PrivateKey.generate()
    suite = Suite.X25519_CHACHA20.hpke
    ct = suite.encrypt(b"alarm", sk.public_key(), info=b"vigil header A")
    assert suite.decrypt(ct, sk, info=b"vigil header A") == b"alarm"
    with pytest.raises(InvalidTag):
        suite.decrypt(ct, sk, info=b"vigil header B")
