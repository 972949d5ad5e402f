#!/usr/bin/env python3
"""Capture what Dovecot answers to FETCH for every fixture message.

src/imap/structure.rs must answer ENVELOPE, BODY, BODYSTRUCTURE, RFC822.SIZE and body
sections exactly as Dovecot 2.3 does. This script APPENDs each .eml of the given
folders to a running Dovecot, FETCHes a fixed list of items plus one BODY[n] / [n.MIME]
(and [n.HEADER] / [n.TEXT] for message/rfc822 parts) for every part Dovecot reports,
and writes one JSON file per message: `<out>/<fixture-name>.json`, a map from the item
as requested (without .PEEK) to the exact bytes that follow the item name in the FETCH
response, literals included verbatim ("{5}\\r\\nhello"). A value that is not UTF-8 is
written as {"base64": "..."}. The files hold no timestamps or UIDs, so re-running the
capture against the same Dovecot version gives the same files.

Dependencies: Python 3 stdlib only (imaplib).

Usage:
  python3 tests/interop/dovecot_capture.py [--host H] [--port P] [--user U]
      [--password PW] --out fixtures/imap/dovecot fixtures/mime fixtures/imap
Defaults come from DOVECOT_HOST, DOVECOT_PORT, DOVECOT_USER, DOVECOT_PASSWORD
(127.0.0.1, 10143, alice, pw). The messages go to a mailbox named
"structure-capture", which is deleted first and at the end.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import json
import os
import re
import sys
from pathlib import Path

MAILBOX = "structure-capture"

# Asked of every message, whether the part exists or not: a missing part is an answer too.
FIXED_ITEMS = [
    "ENVELOPE",
    "BODY",
    "BODYSTRUCTURE",
    "RFC822.SIZE",
    "BODY[]",
    "BODY[HEADER]",
    "BODY[TEXT]",
    "BODY[1]",
    "BODY[1.MIME]",
    "BODY[1.1]",
    "BODY[2]",
    "BODY[2.MIME]",
    "BODY[2.HEADER]",
    "BODY[2.TEXT]",
    "BODY[3]",
    "BODY[1.HEADER]",
    "BODY[HEADER.FIELDS (From Subject Message-ID)]",
    "BODY[HEADER.FIELDS.NOT (Received From)]",
    "BODY[HEADER.FIELDS (X-Not-There)]",
    "BODY[2.HEADER.FIELDS (Subject From)]",
    "BODY[2.HEADER.FIELDS.NOT (Subject)]",
    "BODY[9]",
    "BODY[1.2.3.4]",
]


def parse_sexp(data: bytes, pos: int = 0):
    """Parses one IMAP value (list, quoted, literal, atom/NIL) at `pos`.

    Returns (value, next_pos); lists become Python lists, strings bytes, NIL None."""
    while data[pos : pos + 1] == b" ":
        pos += 1
    c = data[pos : pos + 1]
    if c == b"(":
        pos += 1
        items = []
        while True:
            while data[pos : pos + 1] == b" ":
                pos += 1
            if data[pos : pos + 1] == b")":
                return items, pos + 1
            value, pos = parse_sexp(data, pos)
            items.append(value)
    if c == b'"':
        pos += 1
        out = bytearray()
        while data[pos : pos + 1] != b'"':
            if data[pos : pos + 1] == b"\\":
                pos += 1
            out += data[pos : pos + 1]
            pos += 1
        return bytes(out), pos + 1
    if c == b"{":
        end = data.index(b"}", pos)
        n = int(data[pos + 1 : end])
        start = end + 3  # "}\r\n"
        return data[start : start + n], start + n
    m = re.compile(rb"[^ ()]+").match(data, pos)
    if m is None:
        raise ValueError(f"cannot parse at {pos}: {data[pos:pos + 20]!r}")
    atom = m.group(0)
    return (None if atom.upper() == b"NIL" else atom), m.end()


def part_paths(body):
    """(section path, is message/rfc822) for every part of a parsed BODYSTRUCTURE.

    Numbering as in RFC 3501 6.4.5: the children of a multipart are 1, 2, ...; a
    message that is not multipart has the single part 1; the parts of a message/rfc822
    part continue its number (2.1, 2.2), or are 2.1 when its message is not multipart."""
    if is_multipart(body):
        for n, child in enumerate(children(body), start=1):
            yield from walk(child, str(n))
    else:
        yield from walk(body, "1")


def is_multipart(body) -> bool:
    return isinstance(body, list) and bool(body) and isinstance(body[0], list)


def children(body):
    """The child parts of a multipart: the leading lists, before the subtype."""
    out = []
    for child in body:
        if not isinstance(child, list):
            break
        out.append(child)
    return out


def walk(body, path: str):
    rfc822 = (
        not is_multipart(body)
        and isinstance(body[0], bytes)
        and body[0].lower() == b"message"
        and isinstance(body[1], bytes)
        and body[1].lower() == b"rfc822"
    )
    yield path, rfc822
    if is_multipart(body):
        for n, child in enumerate(children(body), start=1):
            yield from walk(child, f"{path}.{n}")
    elif rfc822 and len(body) > 8 and isinstance(body[8], list):
        inner = body[8]
        if is_multipart(inner):
            for n, child in enumerate(children(inner), start=1):
                yield from walk(child, f"{path}.{n}")
        else:
            yield from walk(inner, f"{path}.1")


def response_bytes(data) -> bytes:
    """Rebuilds the raw untagged FETCH response from imaplib's pieces.

    imaplib hands a response with literals back as (line, literal) tuples followed by
    the trailing line; the line ends in "{n}" and lost its CRLF."""
    out = bytearray()
    for piece in data:
        if isinstance(piece, tuple):
            out += piece[0] + b"\r\n" + piece[1]
        elif piece is not None:
            out += piece
    return bytes(out)


def item_value(raw: bytes) -> bytes:
    """What follows the item name in `N (ITEM value)`."""
    m = re.match(rb"\d+ \(", raw)
    if m is None or not raw.endswith(b")"):
        raise ValueError(f"unexpected FETCH response {raw[:80]!r}")
    pos = m.end()
    # the item name: up to the first space outside brackets
    depth = 0
    while pos < len(raw):
        c = raw[pos : pos + 1]
        if c == b"[":
            depth += 1
        elif c == b"]":
            depth -= 1
        elif c == b" " and depth == 0:
            break
        pos += 1
    return raw[pos + 1 : -1]


def fetch(imap: imaplib.IMAP4, seq: int, item: str) -> bytes:
    peek = item.replace("BODY[", "BODY.PEEK[", 1) if item.startswith("BODY[") else item
    typ, data = imap.fetch(str(seq), f"({peek})")
    if typ != "OK":
        raise RuntimeError(f"FETCH {seq} {peek}: {typ} {data!r}")
    return item_value(response_bytes(data))


def encode(value: bytes):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=os.environ.get("DOVECOT_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("DOVECOT_PORT", "10143")))
    ap.add_argument("--user", default=os.environ.get("DOVECOT_USER", "alice"))
    ap.add_argument("--password", default=os.environ.get("DOVECOT_PASSWORD", "pw"))
    ap.add_argument("--out", required=True, help="folder for the <fixture>.json files")
    ap.add_argument("folders", nargs="+", help="folders whose *.eml are captured")
    args = ap.parse_args()

    files = sorted(p for folder in args.folders for p in Path(folder).glob("*.eml"))
    if not files:
        print("no .eml files found", file=sys.stderr)
        return 1
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        print("two fixtures share a name; their captures would overwrite", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # imaplib turns every bare LF of an APPENDed message into CRLF; the LF-only
    # fixtures must reach Dovecot as they are, so switch that off.
    imaplib.MapCRLF = re.compile(rb"(?!)")

    imap = imaplib.IMAP4(args.host, args.port)
    imap.login(args.user, args.password)
    imap.delete(MAILBOX)
    typ, data = imap.create(MAILBOX)
    if typ != "OK":
        raise RuntimeError(f"CREATE: {data!r}")
    try:
        names = []
        for path in files:
            typ, data = imap.append(MAILBOX, None, None, path.read_bytes())
            if typ != "OK":
                raise RuntimeError(f"APPEND {path}: {data!r}")
            names.append(path.stem)
        typ, data = imap.select(MAILBOX)
        if typ != "OK" or int(data[0]) != len(files):
            raise RuntimeError(f"SELECT: {typ} {data!r}")

        for seq, name in enumerate(names, start=1):
            answers = {}
            for item in FIXED_ITEMS:
                answers[item] = fetch(imap, seq, item)
            body, _ = parse_sexp(answers["BODYSTRUCTURE"])
            paths = list(part_paths(body))
            # Deeply nested fixtures would repeat the same bytes at every level:
            # the first four levels and the three last parts are enough.
            paths = [
                (path, is_rfc822)
                for k, (path, is_rfc822) in enumerate(paths)
                if path.count(".") < 4 or k >= len(paths) - 3
            ]
            for path, is_rfc822 in paths:
                extra = [f"BODY[{path}]", f"BODY[{path}.MIME]"]
                if is_rfc822:
                    extra += [
                        f"BODY[{path}.HEADER]",
                        f"BODY[{path}.TEXT]",
                        f"BODY[{path}.HEADER.FIELDS (Subject)]",
                    ]
                for item in extra:
                    if item not in answers:
                        answers[item] = fetch(imap, seq, item)
            doc = {item: encode(value) for item, value in answers.items()}
            target = out_dir / f"{name}.json"
            target.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{target}: {len(doc)} items")
    finally:
        if imap.state == "SELECTED":
            imap.close()
        imap.delete(MAILBOX)
        imap.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
