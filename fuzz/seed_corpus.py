#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (git-ignored)
from the protocol vectors in fixtures/vectors/. Run from anywhere; safe to re-run."""

import hashlib
import json
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
VECTORS = FUZZ.parent / "fixtures" / "vectors"


def vector(name):
    return json.loads((VECTORS / name).read_text())


def padded_len(n):
    """Padmé, as lnmp::seal::padded_len."""
    n = max(n, 256)
    e = n.bit_length() - 1
    mask = (1 << (e - e.bit_length())) - 1
    return (n + mask) & ~mask


def pad(plaintext):
    """lnmp::seal::pad: u32 length, plaintext, zeros."""
    out = struct.pack(">I", len(plaintext)) + plaintext
    return out + bytes(padded_len(len(out)) - len(out))


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def main():
    frames = vector("frames.json")
    message = vector("message.json")
    blob = vector("blob.json")
    lookup = vector("lookup.json")
    identity = vector("identity.json")
    content_json = message["content_json"].encode()

    seeds = {
        "client_frame": [f.encode() for f in frames["client"]]
        + [f["frame"].encode() for f in frames["invalid_client"]],
        "relay_frame": [f.encode() for f in frames["relay"]],
        "message": [compact(message["message"]), compact(message["message_with_payment"])],
        # First byte: bit 2 picks AES-256-GCM, the low bits the attack (see fuzz/src/lib.rs).
        "open_sealed": [bytes([sel]) for sel in range(8)]
        + [bytes([sel, 0, 0, 1]) for sel in (0, 1, 4, 5)]
        + [bytes([sel]) + pad(p) for sel in (3, 7) for p in (content_json, b'{"body":"hi"}')],
        "content": [
            content_json,
            b"{}",
            compact({"body": "x", "attachments": [blob["attachment"]]}),
        ],
        "address_and_lookup": [compact(lookup["document"]), lookup["address"].encode(), blob["cid"].encode()]
        + [c["address"].encode() for c in identity["cases"]],
    }
    for target, inputs in seeds.items():
        out = FUZZ / "corpus" / target
        out.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (out / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)
        print(f"fuzz/corpus/{target}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
