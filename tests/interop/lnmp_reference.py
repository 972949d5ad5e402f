"""Independent LNMP v1 reference checker.

A second implementation of LNMP v1 written from docs/PROTOCOL.md alone, without
reading the project's Rust sources, used to check that the specification is complete
and that fixtures/vectors/*.json agree with it. Every value in the vectors is
recomputed here, every message is opened with nothing but a holder's secret key, and
tampered copies must be refused.

Dependencies: Python 3.11 stdlib, `cryptography` (ChaCha20-Poly1305, AES-256-GCM,
HKDF) and `mnemonic` (the BIP39 English word list and checksum). secp256k1, BIP340,
BIP32, base58btc and CIDs are implemented here in pure Python.

Usage: python3 tests/interop/lnmp_reference.py [vectors_dir]
Prints one line per check and ends with "N passed, M failed"; exits 1 if any failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mnemonic import Mnemonic


class ProtocolError(Exception):
    """Input that LNMP v1 says a receiver must reject, or a failed verification."""


class UnsupportedVersion(ProtocolError):
    """A `v` this implementation does not speak (section 11)."""


# --- Section 1: conventions ------------------------------------------------------

U64_MAX = 2**64 - 1
MIB = 1024 * 1024


def parse_json_object(text: str | bytes) -> dict:
    """Parse one JSON document: an object, no duplicated member, plain integers only."""

    def unique_members(pairs: list[tuple[str, Any]]) -> dict:
        obj: dict = {}
        for name, value in pairs:
            if name in obj:
                raise ProtocolError(f"duplicated member `{name}`")
            obj[name] = value
        return obj

    def integer(token: str) -> int:
        if token.startswith("-"):
            raise ProtocolError(f"negative integer {token}")
        value = int(token)
        if value > U64_MAX:
            raise ProtocolError(f"integer {token} exceeds 2^64-1")
        return value

    def refuse_number(token: str) -> None:
        raise ProtocolError(f"number {token} is not a non-negative integer")

    try:
        value = json.loads(text, object_pairs_hook=unique_members, parse_int=integer,
                           parse_float=refuse_number, parse_constant=refuse_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ProtocolError("top-level value is not an object")
    return value


def tagged_hash(tag: str, message: bytes) -> bytes:
    tag_hash = hashlib.sha256(tag.encode("ascii")).digest()
    return hashlib.sha256(tag_hash + tag_hash + message).digest()


def u8(value: int) -> bytes:
    return value.to_bytes(1, "big")


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def str16(text: str) -> bytes:
    data = text.encode("utf-8")
    return u16(len(data)) + data


def bytes32(data: bytes) -> bytes:
    return u32(len(data)) + data


def count(items: list | tuple) -> bytes:
    return u16(len(items))


def hex_bytes(value: str, size: int | None = None) -> bytes:
    """Lowercase hex of exactly `size` bytes (any even length if size is None)."""
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-f]{2})*", value):
        raise ProtocolError(f"not lowercase hex: {value!r}")
    data = bytes.fromhex(value)
    if size is not None and len(data) != size:
        raise ProtocolError(f"expected {size} bytes of hex, got {len(data)}")
    return data


def base64_bytes(value: str) -> bytes:
    """Standard base64 with padding; a spelling that does not round-trip is refused."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError) as error:
        raise ProtocolError(f"not base64: {error}") from error
    if base64.b64encode(data).decode("ascii") != value:
        raise ProtocolError("non-canonical base64")
    return data


# --- JSON member validators (section 1: unknown, missing, mistyped members) ------

Validator = Callable[[Any, str], None]
REQUIRED, OPTIONAL = True, False


def check_members(obj: Any, schema: dict[str, tuple[Validator, bool]], where: str) -> dict:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: not an object")
    for name in obj:
        if name not in schema:
            raise ProtocolError(f"{where}: unknown member `{name}`")
    for name, (validate, required) in schema.items():
        if name in obj:
            validate(obj[name], f"{where}.{name}")
        elif required:
            raise ProtocolError(f"{where}: missing member `{name}`")
    return obj


def object_of(schema: dict[str, tuple[Validator, bool]]) -> Validator:
    def validate(value: Any, where: str) -> None:
        check_members(value, schema, where)
    return validate


def is_uint(value: Any, where: str) -> None:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise ProtocolError(f"{where}: not a non-negative integer")


def is_u32(value: Any, where: str) -> None:
    """The few integer members that section 1 says allow less than 2^64-1."""
    is_uint(value, where)
    if value > 2**32 - 1:
        raise ProtocolError(f"{where}: exceeds 2^32-1")


def is_string(value: Any, where: str) -> None:
    if type(value) is not str:
        raise ProtocolError(f"{where}: not a string")


def is_bool(value: Any, where: str) -> None:
    if type(value) is not bool:
        raise ProtocolError(f"{where}: not a boolean")


def is_base64(value: Any, where: str) -> None:
    is_string(value, where)
    base64_bytes(value)


def hex_of(size: int | None) -> Validator:
    def validate(value: Any, where: str) -> None:
        try:
            hex_bytes(value, size)
        except ProtocolError as error:
            raise ProtocolError(f"{where}: {error}") from error
    return validate


def is_pubkey(value: Any, where: str) -> None:
    hex_of(32)(value, where)
    lift_x(bytes.fromhex(value))


def one_of(*allowed: Any) -> Validator:
    def validate(value: Any, where: str) -> None:
        if type(value) not in (str, int) or value not in allowed:
            raise ProtocolError(f"{where}: {value!r} is not one of {allowed}")
    return validate


def array_of(item: Validator, least: int, most: int, distinct: bool = False) -> Validator:
    def validate(value: Any, where: str) -> None:
        if type(value) is not list:
            raise ProtocolError(f"{where}: not an array")
        if not least <= len(value) <= most:
            raise ProtocolError(f"{where}: {len(value)} entries, allowed {least} to {most}")
        if distinct and len(set(map(json.dumps, value))) != len(value):
            raise ProtocolError(f"{where}: duplicated entries")
        for index, entry in enumerate(value):
            item(entry, f"{where}[{index}]")
    return validate


def is_version_1(value: Any, where: str) -> None:
    is_uint(value, where)
    if value != 1:
        raise UnsupportedVersion(f"{where}: unsupported version {value}")


def check_versioned(obj: Any, schema: dict[str, tuple[Validator, bool]], where: str) -> dict:
    """Section 11: an unknown `v` is reported as such before any member is judged."""
    if isinstance(obj, dict) and "v" in obj:
        is_version_1(obj["v"], f"{where}.v")
    return check_members(obj, schema, where)


# --- secp256k1 and BIP340 ----------------------------------------------------------

FIELD_P = 2**256 - 2**32 - 977
ORDER_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GENERATOR = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
             0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)
Point = tuple[int, int] | None


def point_add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and a[1] != b[1]:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, FIELD_P) % FIELD_P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, FIELD_P) % FIELD_P
    x = (slope * slope - a[0] - b[0]) % FIELD_P
    return x, (slope * (a[0] - x) - a[1]) % FIELD_P


def point_mul(point: Point, scalar: int) -> Point:
    result = None
    while scalar:
        if scalar & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        scalar >>= 1
    return result


def lift_x(x_bytes: bytes) -> tuple[int, int]:
    """The even-Y point with this x coordinate; section 2 says to reject any other x."""
    x = int.from_bytes(x_bytes, "big")
    if x >= FIELD_P:
        raise ProtocolError("x coordinate not below the field size")
    y_squared = (pow(x, 3, FIELD_P) + 7) % FIELD_P
    y = pow(y_squared, (FIELD_P + 1) // 4, FIELD_P)
    if y * y % FIELD_P != y_squared:
        raise ProtocolError("not the x coordinate of a secp256k1 point")
    return x, y if y % 2 == 0 else FIELD_P - y


def x_bytes(point: tuple[int, int]) -> bytes:
    return point[0].to_bytes(32, "big")


def secret_scalar(secret: bytes) -> int:
    scalar = int.from_bytes(secret, "big")
    if not 1 <= scalar < ORDER_N:
        raise ProtocolError("secret key out of range")
    return scalar


def public_key(secret: bytes) -> bytes:
    """The x-only public key of a secret key (section 2)."""
    return x_bytes(point_mul(GENERATOR, secret_scalar(secret)))


def bip340_sign(secret: bytes, message: bytes, aux_rand: bytes) -> bytes:
    """BIP340 default signing algorithm, as in the BIP's reference code."""
    d0 = secret_scalar(secret)
    point = point_mul(GENERATOR, d0)
    d = d0 if point[1] % 2 == 0 else ORDER_N - d0
    masked = bytes(a ^ b for a, b in zip(d.to_bytes(32, "big"),
                                          tagged_hash("BIP0340/aux", aux_rand)))
    k0 = int.from_bytes(tagged_hash("BIP0340/nonce", masked + x_bytes(point) + message),
                        "big") % ORDER_N
    if k0 == 0:
        raise ProtocolError("BIP340 nonce is zero")
    nonce_point = point_mul(GENERATOR, k0)
    k = k0 if nonce_point[1] % 2 == 0 else ORDER_N - k0
    challenge = int.from_bytes(tagged_hash(
        "BIP0340/challenge", x_bytes(nonce_point) + x_bytes(point) + message), "big") % ORDER_N
    signature = x_bytes(nonce_point) + ((k + challenge * d) % ORDER_N).to_bytes(32, "big")
    if not bip340_verify(x_bytes(point), message, signature):
        raise ProtocolError("produced a signature that does not verify")
    return signature


def bip340_verify(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """BIP340 verification, as in the BIP's reference code."""
    if len(pubkey) != 32 or len(signature) != 64:
        return False
    try:
        point = lift_x(pubkey)
    except ProtocolError:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r >= FIELD_P or s >= ORDER_N:
        return False
    challenge = int.from_bytes(tagged_hash(
        "BIP0340/challenge", signature[:32] + pubkey + message), "big") % ORDER_N
    nonce_point = point_add(point_mul(GENERATOR, s),
                            point_mul(point, ORDER_N - challenge))
    return nonce_point is not None and nonce_point[1] % 2 == 0 and nonce_point[0] == r


# --- Section 2: identity -------------------------------------------------------------

BIP39 = Mnemonic("english")
IDENTITY_PATH = (138, 0, 0)


def mnemonic_words(mnemonic: str) -> list[str]:
    """Read 24 words, forgiving letter case and runs of white space."""
    words = mnemonic.lower().split()
    if len(words) != 24:
        raise ProtocolError(f"{len(words)} words, expected 24")
    for word in words:
        if word not in BIP39.wordlist:
            raise ProtocolError(f"not a BIP39 English word: {word!r}")
    return words


def seed_from_mnemonic(mnemonic: str) -> bytes:
    try:
        return bytes(BIP39.to_entropy(mnemonic_words(mnemonic)))
    except ValueError as error:
        raise ProtocolError(f"bad mnemonic: {error}") from error


def mnemonic_from_seed(seed: bytes) -> str:
    if len(seed) != 32:
        raise ProtocolError("a seed is 32 bytes")
    return BIP39.to_mnemonic(seed)


def bip39_seed(mnemonic: str) -> bytes:
    password = " ".join(mnemonic_words(mnemonic)).encode("utf-8")
    return hashlib.pbkdf2_hmac("sha512", password, b"mnemonic", 2048, 64)


def bip32_master_key(bip39_seed_bytes: bytes) -> tuple[int, bytes]:
    digest = hmac.new(b"Bitcoin seed", bip39_seed_bytes, hashlib.sha512).digest()
    return secret_scalar(digest[:32]), digest[32:]


def bip32_hardened_child(key: int, chain: bytes, index: int) -> tuple[int, bytes]:
    data = b"\x00" + key.to_bytes(32, "big") + u32(index + 2**31)
    digest = hmac.new(chain, data, hashlib.sha512).digest()
    tweak = int.from_bytes(digest[:32], "big")
    child = (tweak + key) % ORDER_N
    if tweak >= ORDER_N or child == 0:
        raise ProtocolError("invalid BIP32 child key")
    return child, digest[32:]


def identity_secret_key(mnemonic: str) -> bytes:
    """Mnemonic -> BIP39 seed -> BIP32 m/138'/0'/0' secret key."""
    key, chain = bip32_master_key(bip39_seed(mnemonic))
    for index in IDENTITY_PATH:
        key, chain = bip32_hardened_child(key, chain, index)
    return key.to_bytes(32, "big")


# --- Section 3: addresses --------------------------------------------------------------

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
USERNAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,55}[a-z0-9])?")
RELAY_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def base58btc(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = BASE58_ALPHABET[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + text


def base58btc_decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in BASE58_ALPHABET:
            raise ProtocolError(f"not base58btc: {char!r}")
        number = number * 58 + BASE58_ALPHABET.index(char)
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def address_checksum(pubkey: bytes, username: str) -> str:
    digest = hashlib.sha256(pubkey.hex().encode("ascii") + username.encode("ascii"))
    return base58btc(digest.digest())[:6]


@dataclass(frozen=True)
class Address:
    username: str
    checksum: str
    relay: str | None


def parse_address(text: str) -> Address:
    """Parse `username#checksum[@relay]`, folding username and relay to lower case."""
    local, at, relay = text.partition("@")
    username, hash_sign, checksum = local.partition("#")
    username = username.lower()
    if not hash_sign or not USERNAME.fullmatch(username) or ".." in username:
        raise ProtocolError(f"bad username in {text!r}")
    if len(checksum) != 6 or any(char not in BASE58_ALPHABET for char in checksum):
        raise ProtocolError(f"bad checksum in {text!r}")
    if not at:
        return Address(username, checksum, None)
    relay = relay.lower()
    labels = relay.split(".")
    if len(relay) > 253 or len(labels) < 2 or not all(map(RELAY_LABEL.fullmatch, labels)):
        raise ProtocolError(f"bad relay in {text!r}")
    return Address(username, checksum, relay)


def address_verifies(address: Address, pubkey: bytes) -> bool:
    return address_checksum(pubkey, address.username) == address.checksum


# --- Section 9.1: relay URLs -----------------------------------------------------------

def is_relay_url(value: Any, where: str) -> None:
    """Section 9.1: `ws://` or `wss://`, a non-empty authority (the text up to the first
    `/`, `?` or `#`) not starting with `:`, printable ASCII without spaces, <= 256 bytes."""
    is_string(value, where)
    if len(value.encode("utf-8")) > 256:
        raise ProtocolError(f"{where}: relay URL over 256 bytes")
    if not re.fullmatch(r"[\x21-\x7e]*", value):
        raise ProtocolError(f"{where}: relay URL is not printable ASCII without spaces")
    match = re.match(r"wss?://", value)
    if not match:
        raise ProtocolError(f"{where}: relay URL is not ws:// or wss://: {value!r}")
    authority = re.split(r"[/?#]", value[match.end():], maxsplit=1)[0]
    if not authority or authority.startswith(":"):
        raise ProtocolError(f"{where}: relay URL has no host: {value!r}")


# --- Section 4: address lookup ---------------------------------------------------------

LOOKUP_DOCUMENT = {
    "v": (is_version_1, REQUIRED),
    "name": (is_string, REQUIRED),
    "pubkey": (is_pubkey, REQUIRED),
    "relays": (array_of(is_relay_url, 1, 16), REQUIRED),
    "prices": (object_of({
        "stranger": (is_uint, REQUIRED),
        "acquaintance": (is_uint, REQUIRED),
        "friend": (is_uint, REQUIRED),
        "priority": (is_uint, REQUIRED),
        "surge": (object_of({"multiplier": (is_u32, REQUIRED),
                             "threshold": (is_u32, REQUIRED)}), OPTIONAL),
    }), REQUIRED),
}


def accept_lookup_document(body: str | bytes, address: Address) -> dict:
    """What a client does with a lookup answer for `address` (section 4)."""
    if len(body) > 64 * 1024:
        raise ProtocolError("lookup document over 64 KiB")
    document = check_versioned(parse_json_object(body), LOOKUP_DOCUMENT, "lookup")
    if document["name"] != address.username:
        raise ProtocolError(f"name {document['name']!r} is not {address.username!r}")
    if not address_verifies(address, bytes.fromhex(document["pubkey"])):
        raise ProtocolError("address does not verify against pubkey")
    return document


# --- Section 6.1: algorithms -------------------------------------------------------------

AEADS = {"ChaCha20-Poly1305": (1, ChaCha20Poly1305), "AES-256-GCM": (2, AESGCM)}


def aead_encrypt(algorithm: str, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    return AEADS[algorithm][1](key).encrypt(nonce, plaintext, aad)


def aead_decrypt(algorithm: str, key: bytes, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
    try:
        return AEADS[algorithm][1](key).decrypt(nonce, sealed, aad)
    except InvalidTag as error:
        raise ProtocolError(f"{algorithm} authentication failed") from error


# --- Section 7: attachments and blobs ------------------------------------------------------

CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes


def blob_cid(blob: bytes) -> str:
    """CIDv1 raw sha2-256 in multibase base32 lower case, unpadded."""
    encoded = base64.b32encode(CID_PREFIX + hashlib.sha256(blob).digest())
    return "b" + encoded.decode("ascii").rstrip("=").lower()


def cid_digest(cid: str) -> bytes:
    """The sha2-256 digest a raw CIDv1 names, from its base32, base58btc or base16 spelling."""
    prefix, body = cid[:1], cid[1:]
    try:
        if (prefix, body) in (("b", body.lower()), ("B", body.upper())):
            data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            if base64.b32encode(data).decode("ascii").rstrip("=") != body.upper():
                raise ProtocolError(f"non-canonical base32 in {cid!r}")
        elif prefix == "z":
            data = base58btc_decode(body)
        elif (prefix, body) in (("f", body.lower()), ("F", body.upper())):
            data = bytes.fromhex(body)
        else:
            raise ProtocolError(f"unsupported multibase spelling {cid!r}")
    except (binascii.Error, ValueError) as error:
        raise ProtocolError(f"bad CID {cid!r}: {error}") from error
    if len(data) != 36 or not data.startswith(CID_PREFIX):
        raise ProtocolError(f"not a CIDv1 raw sha2-256: {cid!r}")
    return data[4:]


def is_cid(value: Any, where: str) -> None:
    is_string(value, where)
    cid_digest(value)


ATTACHMENT = {
    "cid": (is_cid, REQUIRED),
    "filename": (is_string, REQUIRED),
    "size": (is_uint, REQUIRED),
    "mime_type": (is_string, REQUIRED),
    "key": (hex_of(32), REQUIRED),
    "algorithm": (one_of(*AEADS), REQUIRED),
    "price": (is_uint, OPTIONAL),
    "sha256": (hex_of(32), REQUIRED),
}


def seal_blob(attachment: dict, nonce: bytes, file: bytes) -> bytes:
    aad = tagged_hash("LNMP/1/blob", b"")
    return nonce + aead_encrypt(attachment["algorithm"], bytes.fromhex(attachment["key"]),
                                nonce, aad, file)


def open_blob(blob: bytes, attachment: dict) -> bytes:
    check_members(attachment, ATTACHMENT, "attachment")
    if hashlib.sha256(blob).digest() != cid_digest(attachment["cid"]):
        raise ProtocolError("blob bytes do not hash to the CID")
    aad = tagged_hash("LNMP/1/blob", b"")
    file = aead_decrypt(attachment["algorithm"], bytes.fromhex(attachment["key"]),
                        blob[:12], aad, blob[12:])
    if len(file) != attachment["size"]:
        raise ProtocolError("file size differs from the attachment's size")
    if hashlib.sha256(file).hexdigest() != attachment["sha256"]:
        raise ProtocolError("file sha256 differs from the attachment's sha256")
    return file


# --- Section 6.6: content ----------------------------------------------------------------

def one_raw_email(value: Any, where: str) -> None:
    """`{"inline": base64} | {"blob": attachment}`: exactly one of the two."""
    if isinstance(value, dict) and "inline" in value:
        check_members(value, {"inline": (is_base64, REQUIRED)}, where)
    else:
        check_members(value, {"blob": (object_of(ATTACHMENT), REQUIRED)}, where)


CONTENT = {
    "subject": (is_string, OPTIONAL),
    "body": (is_string, OPTIONAL),
    "body_html": (is_string, OPTIONAL),
    "formatting": (one_of("plain", "markdown", "html"), OPTIONAL),
    "thread_id": (is_string, OPTIONAL),
    "reply_to": (is_string, OPTIONAL),
    "mentions": (array_of(is_pubkey, 0, U64_MAX), OPTIONAL),
    "reactions": (array_of(object_of({
        "target": (is_string, REQUIRED),
        "emoji": (is_string, REQUIRED),
        "remove": (is_bool, OPTIONAL),
    }), 0, U64_MAX), OPTIONAL),
    "edit_history": (array_of(object_of({
        "timestamp": (is_uint, REQUIRED),
        "subject": (is_string, OPTIONAL),
        "body": (is_string, REQUIRED),
    }), 0, U64_MAX), OPTIONAL),
    "delete_after": (is_uint, OPTIONAL),
    "read_receipts": (is_bool, OPTIONAL),
    "attachments": (array_of(object_of(ATTACHMENT), 0, U64_MAX), OPTIONAL),
    "email": (object_of({
        "raw": (one_raw_email, REQUIRED),
        "authentication_results": (is_string, OPTIONAL),
        "mail_from": (is_string, OPTIONAL),
    }), OPTIONAL),
}


def parse_content(content_json: bytes) -> dict:
    if len(content_json) > 12 * MIB:
        raise ProtocolError("content over the 12 MiB limit")
    return check_members(parse_json_object(content_json), CONTENT, "content")


# --- Section 6.2: padding ----------------------------------------------------------------

def padme(length: int) -> int:
    exponent = length.bit_length() - 1
    low_bits = exponent - exponent.bit_length()
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


def pad(content_json: bytes) -> bytes:
    size = padme(max(4 + len(content_json), 256))
    return u32(len(content_json)) + content_json + bytes(size - 4 - len(content_json))


def unpad(padded: bytes) -> bytes:
    size = len(padded)
    if size < 256 or padme(size) != size:
        raise ProtocolError(f"padded length {size} is not a Padme fixed point")
    length = int.from_bytes(padded[:4], "big")
    if 4 + length > size or padme(max(4 + length, 256)) != size:
        raise ProtocolError(f"length prefix {length} does not give padded length {size}")
    if any(padded[4 + length:]):
        raise ProtocolError("non-zero padding byte")
    return padded[4:4 + length]


# --- Section 5: messages -------------------------------------------------------------------

KINDS = range(1, 9)
PRIORITIES = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
MESSAGE_JSON_LIMIT = 16 * MIB

MESSAGE = {
    "v": (is_version_1, REQUIRED),
    "id": (hex_of(32), REQUIRED),
    "from": (is_pubkey, REQUIRED),
    "to": (array_of(is_pubkey, 1, 256, distinct=True), REQUIRED),
    "timestamp": (is_uint, REQUIRED),
    "kind": (one_of(*KINDS), REQUIRED),
    "encrypted": (object_of({
        "algorithm": (one_of(*AEADS), REQUIRED),
        "ephemeral": (is_pubkey, REQUIRED),
        "nonce": (hex_of(12), REQUIRED),
        "keys": (array_of(object_of({"to": (is_pubkey, REQUIRED),
                                     "key": (hex_of(48), REQUIRED)}), 1, 257), REQUIRED),
        "ciphertext": (is_base64, REQUIRED),
    }), REQUIRED),
    "relays": (array_of(is_relay_url, 0, 16), OPTIONAL),
    "expiry": (is_uint, OPTIONAL),
    "priority": (one_of(*PRIORITIES), OPTIONAL),
    "signature": (hex_of(64), REQUIRED),
    "payment": (object_of({"preimage": (hex_of(32), REQUIRED),
                           "amount": (is_uint, REQUIRED),
                           "route": (is_string, OPTIONAL)}), OPTIONAL),
}


@dataclass(frozen=True)
class Message:
    v: int
    id: bytes
    sender: bytes
    to: tuple[bytes, ...]
    timestamp: int
    kind: int
    algorithm: str
    ephemeral: bytes
    nonce: bytes
    keys: tuple[tuple[bytes, bytes], ...]
    ciphertext: bytes
    relays: tuple[str, ...]
    expiry: int | None
    priority: str | None
    signature: bytes
    payment: dict | None


def parse_message(obj: Any) -> Message:
    """Section 5.1: the shape, then the structural rules, before anything cryptographic."""
    check_versioned(obj, MESSAGE, "message")
    sealed = obj["encrypted"]
    message = Message(
        v=obj["v"], id=bytes.fromhex(obj["id"]), sender=bytes.fromhex(obj["from"]),
        to=tuple(map(bytes.fromhex, obj["to"])), timestamp=obj["timestamp"], kind=obj["kind"],
        algorithm=sealed["algorithm"], ephemeral=bytes.fromhex(sealed["ephemeral"]),
        nonce=bytes.fromhex(sealed["nonce"]),
        keys=tuple((bytes.fromhex(k["to"]), bytes.fromhex(k["key"])) for k in sealed["keys"]),
        ciphertext=base64_bytes(sealed["ciphertext"]), relays=tuple(obj.get("relays", ())),
        expiry=obj.get("expiry"), priority=obj.get("priority"),
        signature=bytes.fromhex(obj["signature"]), payment=obj.get("payment"))
    if [holder for holder, _ in message.keys] != list(key_holders(message)):
        raise ProtocolError("encrypted.keys does not list exactly `to` then `from`")
    if len(message.ciphertext) < 256 + 16:
        raise ProtocolError("ciphertext shorter than 272 bytes")
    if message.expiry is not None and message.expiry <= message.timestamp:
        raise ProtocolError("expiry is not after timestamp")
    return message


def parse_message_json(text: str | bytes) -> Message:
    if len(text) > MESSAGE_JSON_LIMIT:
        raise ProtocolError("message over 16 MiB")
    return parse_message(parse_json_object(text))


def key_holders(message: Message) -> tuple[bytes, ...]:
    """Section 6.4: every recipient in order, then the sender if not among them."""
    return message.to + (() if message.sender in message.to else (message.sender,))


def message_body(message: Message) -> bytes:
    """The canonical byte layout of section 5.3."""
    body = u8(message.v) + message.sender + count(message.to) + b"".join(message.to)
    body += u64(message.timestamp) + u8(message.kind)
    body += u8(AEADS[message.algorithm][0]) + message.ephemeral + message.nonce
    body += count(message.keys) + b"".join(holder + key for holder, key in message.keys)
    body += bytes32(message.ciphertext)
    body += count(message.relays) + b"".join(map(str16, message.relays))
    body += u8(0) if message.expiry is None else u8(1) + u64(message.expiry)
    return body + u8(PRIORITIES[message.priority or "normal"])


def message_id(message: Message) -> bytes:
    return tagged_hash("LNMP/1/message", message_body(message))


def verify_message(message: Message) -> None:
    """Section 5.3: the recomputed id equals `id` and the signature verifies under `from`."""
    if message_id(message) != message.id:
        raise ProtocolError("id does not match the message")
    if not bip340_verify(message.sender, message.id, message.signature):
        raise ProtocolError("signature does not verify")


# --- Sections 6.3 to 6.5: envelope, key wrapping, opening ----------------------------------

def envelope_aad(message: Message) -> bytes:
    return tagged_hash("LNMP/1/envelope",
                       u8(message.v) + message.sender + count(message.to) + b"".join(message.to)
                       + u64(message.timestamp) + u8(message.kind)
                       + u8(AEADS[message.algorithm][0]))


def ecdh_x(secret: bytes, pubkey: bytes) -> bytes:
    return x_bytes(point_mul(lift_x(pubkey), secret_scalar(secret)))


def key_encryption_key(shared_x: bytes, ephemeral: bytes, holder: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"LNMP/1/wrap",
                info=ephemeral + holder).derive(shared_x)


def wrap_key(algorithm: str, kek: bytes, ephemeral: bytes, holder: bytes,
             content_key: bytes) -> bytes:
    return aead_encrypt(algorithm, kek, bytes(12), ephemeral + holder, content_key)


def unwrap_key(algorithm: str, kek: bytes, ephemeral: bytes, holder: bytes,
               wrapped: bytes) -> bytes:
    return aead_decrypt(algorithm, kek, bytes(12), ephemeral + holder, wrapped)


def open_message(message: Message, secret: bytes) -> tuple[bytes, dict]:
    """Section 6.5: verify, unwrap this holder's key, decrypt, unpad, parse strictly."""
    verify_message(message)
    holder = public_key(secret)
    wrapped = dict(message.keys).get(holder)
    if wrapped is None:
        raise ProtocolError("not sealed to this key")
    kek = key_encryption_key(ecdh_x(secret, message.ephemeral), message.ephemeral, holder)
    content_key = unwrap_key(message.algorithm, kek, message.ephemeral, holder, wrapped)
    padded = aead_decrypt(message.algorithm, content_key, message.nonce,
                          envelope_aad(message), message.ciphertext)
    content_json = unpad(padded)
    return content_json, parse_content(content_json)


def seal_message(sender_secret: bytes, draft: Message, content_json: bytes, content_key: bytes,
                 ephemeral_secret: bytes, aux_rand: bytes) -> Message:
    """Sections 5.3, 6.2 to 6.4 from the sender's side: `draft` gives the envelope
    (to, timestamp, kind, algorithm, nonce, relays, expiry, priority); the rest is filled."""
    ephemeral = public_key(ephemeral_secret)
    draft = replace(draft, v=1, sender=public_key(sender_secret), ephemeral=ephemeral,
                    payment=None)
    keys = tuple(
        (holder, wrap_key(draft.algorithm,
                          key_encryption_key(ecdh_x(ephemeral_secret, holder), ephemeral, holder),
                          ephemeral, holder, content_key))
        for holder in key_holders(draft))
    ciphertext = aead_encrypt(draft.algorithm, content_key, draft.nonce, envelope_aad(draft),
                              pad(content_json))
    sealed = replace(draft, keys=keys, ciphertext=ciphertext)
    sealed = replace(sealed, id=message_id(sealed))
    return replace(sealed, signature=bip340_sign(sender_secret, sealed.id, aux_rand))


def message_json(message: Message) -> dict:
    """The JSON object of section 5.1, optional members omitted when absent."""
    obj = {
        "v": message.v, "id": message.id.hex(), "from": message.sender.hex(),
        "to": [key.hex() for key in message.to], "timestamp": message.timestamp,
        "kind": message.kind,
        "encrypted": {
            "algorithm": message.algorithm, "ephemeral": message.ephemeral.hex(),
            "nonce": message.nonce.hex(),
            "keys": [{"to": holder.hex(), "key": key.hex()} for holder, key in message.keys],
            "ciphertext": base64.b64encode(message.ciphertext).decode("ascii"),
        },
        "relays": list(message.relays), "expiry": message.expiry,
        "priority": message.priority, "signature": message.signature.hex(),
        "payment": message.payment,
    }
    return {name: value for name, value in obj.items() if value not in (None, [])}


# --- Section 8: payment proof ----------------------------------------------------------------

def payment_hash(payment: dict) -> bytes:
    return hashlib.sha256(bytes.fromhex(payment["preimage"])).digest()


# --- Section 9: relay frames -------------------------------------------------------------------

def is_sub(value: Any, where: str) -> None:
    if type(value) is not str or not re.fullmatch(r"[\x21-\x7e]{1,64}", value):
        raise ProtocolError(f"{where}: sub must be 1 to 64 printable ASCII characters")


def is_challenge(value: Any, where: str) -> None:
    hex_of(None)(value, where)
    if len(value) < 32:
        raise ProtocolError(f"{where}: challenge shorter than 16 bytes")


def is_filter(value: Any, where: str) -> None:
    check_members(value, {
        "ids": (array_of(hex_of(32), 0, 1024), OPTIONAL),
        "from": (array_of(is_pubkey, 0, 1024), OPTIONAL),
        "to": (array_of(is_pubkey, 0, 1024), OPTIONAL),
        "kinds": (array_of(one_of(*KINDS), 0, 1024), OPTIONAL),
        "since": (is_uint, OPTIONAL),
        "until": (is_uint, OPTIONAL),
        "limit": (is_u32, OPTIONAL),
    }, where)
    if value.get("since", 0) > value.get("until", U64_MAX):
        raise ProtocolError(f"{where}: since is after until")


def is_message(value: Any, where: str) -> None:
    parse_message(value)


def is_ok_id(value: Any, where: str) -> None:
    """OK's `id` is a message id (32 bytes) or an AUTH challenge (at least 16 bytes)."""
    is_challenge(value, where)


FILTERS = array_of(is_filter, 1, 16)
TYPE = (is_string, REQUIRED)
CLIENT_FRAMES = {
    "AUTH": {"type": TYPE, "pubkey": (is_pubkey, REQUIRED), "relay": (is_relay_url, REQUIRED),
             "challenge": (is_challenge, REQUIRED), "timestamp": (is_uint, REQUIRED),
             "signature": (hex_of(64), REQUIRED)},
    "SUB": {"type": TYPE, "sub": (is_sub, REQUIRED), "filters": (FILTERS, REQUIRED)},
    "UNSUB": {"type": TYPE, "sub": (is_sub, REQUIRED)},
    "PUBLISH": {"type": TYPE, "message": (is_message, REQUIRED)},
    "QUERY": {"type": TYPE, "sub": (is_sub, REQUIRED), "filters": (FILTERS, REQUIRED)},
}
RELAY_FRAMES = {
    "AUTH": {"type": TYPE, "challenge": (is_challenge, REQUIRED)},
    "MSG": {"type": TYPE, "sub": (is_sub, REQUIRED), "message": (is_message, REQUIRED)},
    "EOSE": {"type": TYPE, "sub": (is_sub, REQUIRED)},
    "OK": {"type": TYPE, "id": (is_ok_id, REQUIRED), "accepted": (is_bool, REQUIRED),
           "reason": (is_string, OPTIONAL)},
    "NOTICE": {"type": TYPE, "severity": (one_of("info", "warning", "error"), REQUIRED),
               "message": (is_string, REQUIRED)},
    "ERROR": {"type": TYPE,
              "code": (one_of("malformed", "too-large", "rate-limited", "auth-required",
                              "restricted", "unknown-subscription",
                              "too-many-subscriptions", "internal"), REQUIRED),
              "message": (is_string, REQUIRED), "sub": (is_sub, OPTIONAL)},
    "INVOICE": {"type": TYPE, "id": (hex_of(32), REQUIRED), "amount": (is_uint, REQUIRED),
                "description": (is_string, REQUIRED), "bolt11": (is_string, REQUIRED),
                "expires_at": (is_uint, OPTIONAL)},
}


def parse_frame(text: str, frames: dict[str, dict]) -> dict:
    if len(text.encode("utf-8")) > 16 * MIB:
        raise ProtocolError("frame over 16 MiB")
    frame = parse_json_object(text)
    schema = frames.get(frame.get("type"))
    if schema is None:
        raise ProtocolError(f"unknown frame type {frame.get('type')!r}")
    check_members(frame, schema, frame["type"])
    if frames is RELAY_FRAMES and frame["type"] == "OK" and not frame["accepted"] \
            and "reason" not in frame:
        raise ProtocolError("OK: a refusal must carry a reason (section 9.4)")
    return frame


def auth_digest(frame: dict) -> bytes:
    """Section 9.3: what a client's AUTH answer signs."""
    return tagged_hash("LNMP/1/auth", bytes.fromhex(frame["pubkey"]) + str16(frame["relay"])
                       + str16(frame["challenge"]) + u64(frame["timestamp"]))


def verify_auth(frame: dict) -> bool:
    return bip340_verify(bytes.fromhex(frame["pubkey"]), auth_digest(frame),
                         bytes.fromhex(frame["signature"]))


# --- Checking the vectors -----------------------------------------------------------------------

class Report:
    """Counts checks and prints one line for each."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def record(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")

    def holds(self, name: str, condition: Callable[[], bool]) -> None:
        try:
            self.record(name, condition(), "condition is false")
        except Exception as error:  # a crash in a check is a failed check, not an abort
            self.record(name, False, f"{type(error).__name__}: {error}")

    def accepts(self, name: str, action: Callable[[], Any]) -> None:
        """Passes if `action()` (a parse or a verification) does not raise."""
        try:
            action()
            self.record(name, True)
        except Exception as error:
            self.record(name, False, f"{type(error).__name__}: {error}")

    def equal(self, name: str, compute: Callable[[], Any], expected: Any) -> None:
        try:
            computed = compute()
            self.record(name, computed == expected, f"computed {computed!r}, vector {expected!r}")
        except Exception as error:
            self.record(name, False, f"{type(error).__name__}: {error}")

    def rejects(self, name: str, action: Callable[[], Any]) -> None:
        """Passes only if `action()` raises ProtocolError (any other error is a bug)."""
        try:
            action()
            self.record(name, False, "was accepted")
        except ProtocolError:
            self.record(name, True)
        except Exception as error:
            self.record(name, False, f"{type(error).__name__}: {error}")


def flip(data: bytes, index: int | None = None) -> bytes:
    """`data` with the bits of one byte (the middle one by default) inverted."""
    index = len(data) // 2 if index is None else index
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]


def check_identity(vectors: dict, report: Report) -> None:
    for case in vectors["cases"]:
        name = f"identity[{case['username']}]"
        seed = bytes.fromhex(case["seed"])
        secret = bytes.fromhex(case["secret_key"])
        report.equal(f"{name}: mnemonic -> seed (BIP39 entropy)",
                     lambda: seed_from_mnemonic(case["mnemonic"]).hex(), case["seed"])
        report.equal(f"{name}: seed -> mnemonic", lambda: mnemonic_from_seed(seed),
                     case["mnemonic"])
        sloppy = "  " + case["mnemonic"].upper().replace(" ", " \t ")
        report.equal(f"{name}: mnemonic read with odd case and spacing -> same seed",
                     lambda: seed_from_mnemonic(sloppy), seed)
        report.equal(f"{name}: mnemonic -> BIP39 seed (PBKDF2 of the normalized words)",
                     lambda: bip39_seed(case["mnemonic"]).hex(), case["bip39_seed"])
        report.equal(f"{name}: sloppy mnemonic -> same BIP39 seed",
                     lambda: bip39_seed(sloppy).hex(), case["bip39_seed"])
        report.equal(f"{name}: BIP39 seed -> BIP32 m/138'/0'/0' secret key",
                     lambda: identity_secret_key(case["mnemonic"]).hex(), case["secret_key"])
        report.equal(f"{name}: secret key -> x-only public key",
                     lambda: public_key(secret).hex(), case["public_key"])
        address = parse_address(case["address"])
        report.equal(f"{name}: address parts", lambda: (address.username, address.relay),
                     (case["username"], case["relay"]))
        report.equal(f"{name}: address checksum",
                     lambda: address_checksum(bytes.fromhex(case["public_key"]), case["username"]),
                     address.checksum)
    first = vectors["cases"][0]
    report.rejects("identity: mnemonic with a wrong checksum word is refused",
                   lambda: seed_from_mnemonic(first["mnemonic"].rsplit(" ", 1)[0] + " zoo"))
    report.rejects("identity: 23-word mnemonic is refused",
                   lambda: seed_from_mnemonic(first["mnemonic"].rsplit(" ", 1)[0]))
    report.holds("identity: address does not verify against another key",
                 lambda: not address_verifies(parse_address(first["address"]),
                                              bytes.fromhex(vectors["cases"][1]["public_key"])))


def check_lookup(vectors: dict, report: Report) -> None:
    body = json.dumps(vectors["document"])
    address = parse_address(vectors["address"])
    report.accepts("lookup: document accepted for its address (name, checksum, shape)",
                   lambda: accept_lookup_document(body, address))
    renamed = json.dumps({**vectors["document"], "name": "mallory"})
    report.rejects("lookup: document naming another user is refused",
                   lambda: accept_lookup_document(renamed, address))
    other_key = json.dumps({**vectors["document"], "pubkey": x_bytes(GENERATOR).hex()})
    report.rejects("lookup: document with a substituted key is refused",
                   lambda: accept_lookup_document(other_key, address))


def holder_secrets(vectors: dict) -> dict[bytes, bytes]:
    """Public key -> secret key of the sender and every recipient a vector names."""
    recipients = vectors.get("recipient_secret_keys") or [vectors["recipient_secret_key"]]
    return {public_key(secret): secret
            for secret in map(bytes.fromhex, [vectors["sender_secret_key"], *recipients])}


def check_message_sealing(vectors: dict, message: Message, report: Report,
                          name: str = "message") -> None:
    """Every intermediate value of a sealed-message vector, recomputed from the fixed
    randomness."""
    content_json = vectors["content_json"].encode("utf-8")
    holders = holder_secrets(vectors)
    ephemeral_secret = bytes.fromhex(vectors["ephemeral_secret_key"])
    content_key = bytes.fromhex(vectors["content_key"])
    report.accepts(f"{name}: content_json parses as content (section 6.6)",
                   lambda: parse_content(content_json))
    report.equal(f"{name}: padded plaintext (Padme)", lambda: pad(content_json).hex(),
                 vectors["padded_plaintext"])
    report.equal(f"{name}: the vector's secret keys are exactly from and to",
                 lambda: sorted(holders), sorted(set(key_holders(message))))
    report.equal(f"{name}: ephemeral public key", lambda: public_key(ephemeral_secret).hex(),
                 vectors["ephemeral_public_key"])
    report.equal(f"{name}: envelope AAD", lambda: envelope_aad(message).hex(),
                 vectors["envelope_aad"])
    report.equal(f"{name}: one key wrap per key holder (section 6.4)",
                 lambda: [bytes.fromhex(wrap["to"]) for wrap in vectors["key_wraps"]],
                 list(key_holders(message)))
    for index, wrap in enumerate(vectors["key_wraps"]):
        holder = bytes.fromhex(wrap["to"])
        wrap_name = f"{name}: key wrap {index}"
        report.equal(f"{wrap_name}: holder order", lambda: key_holders(message)[index], holder)
        report.equal(f"{wrap_name}: associated data E || R",
                     lambda: (message.ephemeral + holder).hex(), wrap["associated_data"])
        report.equal(f"{wrap_name}: shared x from the ephemeral secret",
                     lambda: ecdh_x(ephemeral_secret, holder).hex(), wrap["shared_x"])
        report.equal(f"{wrap_name}: shared x from the holder's secret",
                     lambda: ecdh_x(holders[holder], message.ephemeral).hex(), wrap["shared_x"])
        kek = key_encryption_key(bytes.fromhex(wrap["shared_x"]), message.ephemeral, holder)
        report.equal(f"{wrap_name}: KEK (HKDF)", lambda: kek.hex(), wrap["kek"])
        report.equal(f"{wrap_name}: wrapped key",
                     lambda: wrap_key(message.algorithm, kek, message.ephemeral, holder,
                                      content_key).hex(), wrap["wrapped"])
        report.equal(f"{wrap_name}: wrapped key is the message's",
                     lambda: message.keys[index][1].hex(), wrap["wrapped"])
    report.equal(f"{name}: ciphertext from content key, nonce, AAD and padded plaintext",
                 lambda: aead_encrypt(message.algorithm, content_key,
                                      bytes.fromhex(vectors["nonce"]), envelope_aad(message),
                                      bytes.fromhex(vectors["padded_plaintext"])),
                 message.ciphertext)


def check_sealed(vectors: dict, report: Report, name: str) -> Message:
    """A sealed-message vector: shape, intermediate values, id, signature, and opening by
    every key holder with nothing but its secret key."""
    text = json.dumps(vectors["message"])
    report.accepts(f"{name}: parses strictly (section 5.1 shape and structural rules)",
                   lambda: parse_message_json(text))
    message = parse_message_json(text)
    check_message_sealing(vectors, message, report, name)
    report.equal(f"{name}: id from the canonical layout", lambda: message_id(message).hex(),
                 vectors["id"])
    report.equal(f"{name}: id member", lambda: message.id.hex(), vectors["id"])
    report.holds(f"{name}: BIP340 signature verifies under from",
                 lambda: bip340_verify(message.sender, message.id, message.signature))
    report.equal(f"{name}: BIP340 signature reproduced with aux_rand",
                 lambda: bip340_sign(bytes.fromhex(vectors["sender_secret_key"]), message.id,
                                     bytes.fromhex(vectors["aux_rand"])).hex(),
                 vectors["signature"])
    report.equal(f"{name}: signature member", lambda: message.signature.hex(),
                 vectors["signature"])
    expected_content = (vectors["content_json"].encode("utf-8"),
                        parse_content(vectors["content_json"].encode("utf-8")))
    for holder, secret in holder_secrets(vectors).items():
        report.equal(f"{name}: opens as key holder {holder.hex()[:8]}... with only its secret key",
                     lambda: open_message(message, secret), expected_content)
    return message


def check_message(vectors: dict, report: Report) -> None:
    message = check_sealed(vectors, report, "message")
    check_resealing(vectors, message, report)
    paid = parse_message_json(json.dumps(vectors["message_with_payment"]))
    report.accepts("message_with_payment: verifies (payment is outside id and signature)",
                   lambda: verify_message(paid))
    report.holds("message_with_payment: same message apart from payment",
                 lambda: replace(paid, payment=None) == message)
    report.equal("message_with_payment: payment_hash = SHA256(preimage)",
                 lambda: payment_hash(paid.payment).hex(), vectors["payment_hash"])
    check_defaults(vectors, report)
    check_tampering(vectors, message, report)
    for index, more in enumerate(vectors["more_messages"]):
        name = f"more_messages[{index}]"
        extra = check_sealed(more, report, name)
        report.equal(f"{name}: whole message sealed again byte for byte",
                     lambda: json.dumps(message_json(reseal(more, extra)), sort_keys=True),
                     json.dumps(more["message"], sort_keys=True))
        report.holds(f"{name}: a copy with one flipped ciphertext byte is refused",
                     lambda: refuses(lambda: open_message(
                         replace(extra, ciphertext=flip(extra.ciphertext)),
                         bytes.fromhex(more["sender_secret_key"]))))
    kinds = [more["message"] for more in vectors["more_messages"]]
    report.holds("more_messages: cover AES-256-GCM, the sender among 3 recipients, and a "
                 "minimal non-TEXT message without relays, expiry or default priority",
                 lambda: any(m["encrypted"]["algorithm"] == "AES-256-GCM" for m in kinds)
                 and any(len(m["to"]) == 3 and m["from"] in m["to"]
                         and len(m["encrypted"]["keys"]) == 3 for m in kinds)
                 and any(m["kind"] != 1 and "relays" not in m and "expiry" not in m
                         and m.get("priority") == "low" for m in kinds))


def refuses(action: Callable[[], Any]) -> bool:
    try:
        action()
    except ProtocolError:
        return True
    return False


def reseal(vectors: dict, message: Message) -> Message:
    """Seal a vector's message again from its content JSON and fixed randomness."""
    return seal_message(draft=message, content_json=vectors["content_json"].encode("utf-8"),
                        **{name: bytes.fromhex(vectors[key]) for name, key in (
                            ("sender_secret", "sender_secret_key"),
                            ("content_key", "content_key"),
                            ("ephemeral_secret", "ephemeral_secret_key"),
                            ("aux_rand", "aux_rand"))})


def check_defaults(vectors: dict, report: Report) -> None:
    """Section 5.3: an absent priority is "normal" and an absent relays is []; writing
    or omitting either is the same message with the same id."""
    without_priority = {k: v for k, v in vectors["message"].items() if k != "priority"}
    report.equal("defaults: message without its \"normal\" priority keeps its id",
                 lambda: message_id(parse_message(without_priority)).hex(), vectors["id"])
    minimal = next(m for m in vectors["more_messages"] if "relays" not in m["message"])
    with_empty = {**minimal["message"], "relays": []}
    report.equal("defaults: message without relays keeps its id with \"relays\": []",
                 lambda: message_id(parse_message(with_empty)).hex(), minimal["id"])
    report.accepts("defaults: that copy verifies", lambda: verify_message(
        parse_message(with_empty)))


def check_resealing(vectors: dict, message: Message, report: Report) -> None:
    """Seal the whole message again from its inputs, with both algorithms of section 6.1."""
    report.equal("seal: whole message sealed from content_json and the fixed randomness",
                 lambda: message_json(reseal(vectors, message)), vectors["message"])
    aes = reseal(vectors, replace(message, algorithm="AES-256-GCM"))
    for role in ("recipient", "sender"):
        report.equal(f"seal: AES-256-GCM copy opens as the {role}",
                     lambda: open_message(aes, bytes.fromhex(vectors[f"{role}_secret_key"]))[0],
                     vectors["content_json"].encode("utf-8"))


def check_tampering(vectors: dict, message: Message, report: Report) -> None:
    """Negative checks: one flipped byte must make verification or opening fail."""
    recipient = bytes.fromhex(vectors["recipient_secret_key"])
    content_key = bytes.fromhex(vectors["content_key"])
    flipped_key = ((message.keys[0][0], flip(message.keys[0][1])),) + message.keys[1:]
    tampered = {
        "id": replace(message, id=flip(message.id)),
        "signature": replace(message, signature=flip(message.signature)),
        "ciphertext": replace(message, ciphertext=flip(message.ciphertext)),
        "wrapped key": replace(message, keys=flipped_key),
    }
    for what, copy in tampered.items():
        report.rejects(f"tampered {what}: message does not verify",
                       lambda: verify_message(copy))
        report.rejects(f"tampered {what}: recipient cannot open it",
                       lambda: open_message(copy, recipient))
    report.rejects("tampered ciphertext: AEAD refuses it even with the right key and AAD",
                   lambda: aead_decrypt(message.algorithm, content_key, message.nonce,
                                        envelope_aad(message), flip(message.ciphertext)))
    kek = bytes.fromhex(vectors["key_wraps"][0]["kek"])
    report.rejects("tampered wrapped key: unwrapping refuses it even with the right KEK",
                   lambda: unwrap_key(message.algorithm, kek, message.ephemeral,
                                      message.keys[0][0], flip(message.keys[0][1])))
    moved = replace(message, kind=2)
    moved = replace(moved, id=message_id(moved))
    moved = replace(moved, signature=bip340_sign(bytes.fromhex(vectors["sender_secret_key"]),
                                                 moved.id, bytes(32)))
    report.accepts("envelope binding: copy re-signed with another kind verifies",
                   lambda: verify_message(moved))
    report.rejects("envelope binding: that copy does not open",
                   lambda: open_message(moved, recipient))
    padded = bytes.fromhex(vectors["padded_plaintext"])
    report.rejects("unpad: non-zero padding byte is refused",
                   lambda: unpad(flip(padded, len(padded) - 1)))
    report.rejects("unpad: length that is not a Padme fixed point is refused",
                   lambda: unpad(padded + b"\x00"))


def check_blob(vectors: dict, report: Report) -> None:
    blob = base64_bytes(vectors["blob"])
    attachment = vectors["attachment"]
    plaintext = bytes.fromhex(vectors["plaintext"])
    report.accepts("blob: attachment parses (section 7)",
                   lambda: check_members(attachment, ATTACHMENT, "attachment"))
    report.equal("blob: sealed from key and nonce",
                 lambda: seal_blob(attachment, bytes.fromhex(vectors["nonce"]), plaintext), blob)
    report.equal("blob: CIDv1 raw sha2-256 base32 of the blob bytes", lambda: blob_cid(blob),
                 vectors["cid"])
    report.equal("blob: attachment names the same CID and key",
                 lambda: (attachment["cid"], attachment["key"]), (vectors["cid"], vectors["key"]))
    report.equal("blob: opens (CID, decrypt, size, sha256)", lambda: open_blob(blob, attachment),
                 plaintext)
    digest = CID_PREFIX + hashlib.sha256(blob).digest()
    for spelling in ("z" + base58btc(digest), "f" + digest.hex(), vectors["cid"].upper()):
        report.equal(f"blob: CID spelled {spelling[:8]}... names the blob",
                     lambda: cid_digest(spelling), hashlib.sha256(blob).digest())
    report.rejects("blob: a flipped byte no longer matches the CID",
                   lambda: open_blob(flip(blob), attachment))


def check_frames(vectors: dict, report: Report) -> None:
    for side, frames in (("client", CLIENT_FRAMES), ("relay", RELAY_FRAMES)):
        for text in vectors[side]:
            kind = json.loads(text)["type"]
            report.accepts(f"frames: {side} {kind} has exactly the members section 9 lists",
                           lambda: parse_frame(text, frames))
    for case in vectors["invalid_client"]:
        report.rejects(f"frames: invalid client frame {case['frame']} is refused",
                       lambda: parse_frame(case["frame"], CLIENT_FRAMES))
    auth = parse_frame(vectors["client"][0], CLIENT_FRAMES)
    challenge = parse_frame(vectors["relay"][0], RELAY_FRAMES)["challenge"]
    report.equal("frames: client AUTH answers the relay's challenge", lambda: auth["challenge"],
                 challenge)
    report.holds("frames: client AUTH signature verifies over the AUTH digest",
                 lambda: verify_auth(auth))
    auth_secret = bytes.fromhex(vectors["auth_secret_key"])
    report.equal("frames: AUTH secret key is the AUTH pubkey's",
                 lambda: public_key(auth_secret).hex(), auth["pubkey"])
    report.equal("frames: AUTH signature reproduced with auth_aux_rand",
                 lambda: bip340_sign(auth_secret, auth_digest(auth),
                                     bytes.fromhex(vectors["auth_aux_rand"])).hex(),
                 auth["signature"])
    report.holds("frames: AUTH bound to another relay URL does not verify",
                 lambda: not verify_auth({**auth, "relay": "wss://other.example:7138"}))
    for url in ("wss://example.com:7138", "ws://relay.example.org/lnmp", "wss://[::1]:7138/p?q",
                "wss://a"):
        report.accepts(f"relay URL {url} is valid (section 9.1)",
                       lambda: is_relay_url(url, "url"))
    for url in ("https://example.com", "wss://", "wss://:7138", "wss:///path", "wss://a b",
                "wss://caf\u00e9.example", "wss://" + "a" * 251):
        report.rejects(f"relay URL {url[:24]!r} is refused (section 9.1)",
                       lambda: is_relay_url(url, "url"))
    for text in (vectors["client"][3], vectors["relay"][1]):
        frame = json.loads(text)
        report.accepts(f"frames: {frame['type']} message verifies",
                       lambda: verify_message(parse_message(frame["message"])))


VECTOR_CHECKS = {
    "identity.json": check_identity,
    "message.json": check_message,
    "blob.json": check_blob,
    "lookup.json": check_lookup,
    "frames.json": check_frames,
}


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    vectors_dir = Path(argv[1]) if len(argv) > 1 else root / "fixtures" / "vectors"
    report = Report()
    for filename, check in VECTOR_CHECKS.items():
        try:
            vectors = json.loads((vectors_dir / filename).read_text("utf-8"))
            check(vectors, report)
        except Exception as error:  # a vector file that cannot be checked at all
            report.record(f"{filename}: checked", False, f"{type(error).__name__}: {error}")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
