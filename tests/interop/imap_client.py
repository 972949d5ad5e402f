#!/usr/bin/env python3
"""Thunderbird's first sync, replayed against an IMAP server, as a comparable transcript.

    imap_client.py run --port P --user U --password W [--login-user U2] --fixtures DIR
                       --out FILE.json [--label NAME] [--require-caps "IMAP4rev1 IDLE ..."]
    imap_client.py compare REFERENCE.json OURS.json [--allow imap_allowed_diffs.txt]
    imap_client.py tls --port P --tls-port T --user U --password W [--label NAME]

`run` talks to 127.0.0.1:P (plain IMAP, no TLS) with Python's imaplib (stdlib only)
and needs an account whose mailboxes are empty (INBOX, Sent, Drafts, Trash, Junk,
Archive, Requests, separator "/"). A setup connection APPENDs every fixtures/mime/*.eml
plus a generated 150 KiB message to INBOX (with fixed dates and a few flags), one to
Sent and one to Drafts. Then a second connection does what Thunderbird does on a first
sync: CAPABILITY, AUTHENTICATE PLAIN (SASL-IR), ID, NAMESPACE, LIST, LSUB, SELECT INBOX,
UID FETCH (FLAGS), the header fetch, every body in 64 KiB chunks (BODY.PEEK[]<n.65536>,
put together and compared with the APPENDed bytes), BODYSTRUCTURE, ENVELOPE, body
sections, STATUS of the other folders, SEARCH, STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE,
a few errors, CREATE/RENAME/DELETE, and IDLE while a third connection (LOGIN as
--login-user, e.g. alice@domain) APPENDs a message: the idler must see "* n EXISTS"
within one second. A last connection does ENABLE CONDSTORE, SELECT (CONDSTORE) and
FETCH MODSEQ. The account's fixed mailboxes make it usable once per account. It prints "ok - ..." / "not ok - ..." lines for its own checks
(login, APPEND, chunked bodies equal what was sent, RFC822.SIZE, IDLE latency, required
capabilities) and writes the transcript: every server response parsed and re-rendered
in a canonical form (tags, response texts, UIDVALIDITY, MODSEQ, server-chosen
INTERNALDATEs and ID answers masked; flag and LIST attribute lists sorted; FETCH items
sorted; long strings as length + SHA-1), step by step; capabilities kept apart.

`compare` diffs two transcripts step by step (the first is the reference, normally
Dovecot), prints the capability differences for information, and lists every other
difference: "allowed - ..." when a line of the allow-list file (see
imap_allowed_diffs.txt beside this script) explains it, "diff - ..." otherwise. Its
last line is "ok - ..." or "not ok - ..." and its exit status 1 when anything was not
allowed.

`tls` LOGINs and SELECTs INBOX over STARTTLS (port P) and implicit TLS (port T),
without verifying the certificate, and prints "ok - ..." / "not ok - ..." lines.
"""

import argparse
import base64
import collections
import difflib
import hashlib
import imaplib
import json
import os
import random
import re
import sys
import threading
import time

for _name in ("ID", "MOVE", "UNSELECT", "ENABLE", "NAMESPACE", "IDLE", "AUTHENTICATE",
              "APPEND", "STATUS", "LIST", "LSUB", "CREATE", "RENAME", "DELETE", "UID",
              "EXPUNGE", "SELECT", "EXAMINE", "CAPABILITY", "LOGIN", "LOGOUT", "NOOP"):
    imaplib.Commands[_name] = ("NONAUTH", "AUTH", "SELECTED", "LOGOUT")

CHUNK = 65536
HEADER_FIELDS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References "
                 "Newsgroups In-Reply-To Content-Type Reply-To")
OTHER_FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive", "Requests")
LONG_STRING = 1500  # strings longer than this are shown as length + SHA-1


# --- a small IMAP response parser ------------------------------------------------------

class Str(bytes):
    """A quoted string or literal (as opposed to an atom)."""


class Parser:
    def __init__(self, raw):
        self.raw = raw
        self.pos = 0

    def eof(self):
        return self.pos >= len(self.raw)

    def peek(self):
        return self.raw[self.pos:self.pos + 1]

    def skip_spaces(self):
        while self.peek() == b" ":
            self.pos += 1

    def rest_of_line(self):
        end = self.raw.find(b"\r\n", self.pos)
        if end < 0:
            end = len(self.raw)
        text = self.raw[self.pos:end]
        self.pos = min(end + 2, len(self.raw))
        return text

    def at_eol(self):
        return self.raw.startswith(b"\r\n", self.pos) or self.eof()

    def bracketed(self):
        """From '[' to its matching ']' (quoted strings inside are skipped)."""
        start = self.pos
        depth = 0
        while not self.eof():
            c = self.peek()
            if c == b'"':
                self.quoted()
                continue
            self.pos += 1
            if c == b"[":
                depth += 1
            elif c == b"]":
                depth -= 1
                if depth == 0:
                    break
            elif c == b"\r" and self.raw.startswith(b"\r\n", self.pos - 1):
                self.pos -= 1
                break
        return self.raw[start:self.pos]

    def quoted(self):
        assert self.peek() == b'"'
        self.pos += 1
        out = bytearray()
        while not self.eof():
            c = self.raw[self.pos]
            self.pos += 1
            if c == 0x5C and not self.eof():  # backslash
                out.append(self.raw[self.pos])
                self.pos += 1
            elif c == 0x22:
                break
            else:
                out.append(c)
        return Str(bytes(out))

    def atom(self):
        start = self.pos
        while not self.eof():
            c = self.peek()
            if c in (b" ", b"(", b")", b"\r"):
                break
            if c == b"[":
                self.bracketed()
                continue
            self.pos += 1
        return self.raw[start:self.pos].decode("latin-1")

    def value(self):
        c = self.peek()
        if c == b"(":
            self.pos += 1
            items = []
            while True:
                self.skip_spaces()
                if self.eof() or self.at_eol():
                    return items
                if self.peek() == b")":
                    self.pos += 1
                    return items
                start = self.pos
                items.append(self.value())
                if self.pos == start:
                    items.append(repr(self.raw[self.pos:self.pos + 1]))
                    self.pos += 1
        if c == b'"':
            return self.quoted()
        if c == b"{":
            m = re.compile(rb"\{(\d+)\+?\}\r\n").match(self.raw, self.pos)
            if m:
                n = int(m.group(1))
                self.pos = m.end() + n
                return Str(self.raw[m.end():m.end() + n])
        return self.atom()

    def values_to_eol(self):
        out = []
        while True:
            self.skip_spaces()
            if self.at_eol():
                self.rest_of_line()
                return out
            if self.peek() == b")":  # stray: keep it visible
                self.pos += 1
                out.append(")")
                continue
            start = self.pos
            out.append(self.value())
            if self.pos == start:  # a byte no rule takes (a bare CR): keep it visible
                out.append(repr(self.raw[self.pos:self.pos + 1]))
                self.pos += 1


def parse_responses(raw):
    """Raw server bytes -> list of (kind, data) tuples, one per response."""
    p = Parser(raw)
    out = []
    while not p.eof():
        first = p.atom()
        p.skip_spaces()
        if first == "+":
            p.rest_of_line()
            out.append(("continuation", None))
            continue
        word = p.atom()
        p.skip_spaces()
        upper = word.upper()
        if upper in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
            code = p.bracketed().decode("latin-1") if p.peek() == b"[" else ""
            text = p.rest_of_line().decode("latin-1").strip()
            kind = "untagged-status" if first == "*" else "tagged"
            out.append((kind, (upper, code, text)))
        elif first != "*":
            out.append(("garbage", (first + " " + word + " " + p.rest_of_line().decode("latin-1")).strip()))
        elif word.isdigit():
            what = p.atom().upper()
            out.append(("numbered", (int(word), what, p.values_to_eol())))
        else:
            out.append(("data", (upper, p.values_to_eol())))
    return out


# --- canonical rendering ------------------------------------------------------------

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                       "\\Draft", "\\Recent", "\\*")}
LIST_ATTRS = {a.lower(): a for a in ("\\HasChildren", "\\HasNoChildren", "\\Noselect",
                                     "\\NonExistent", "\\Noinferiors", "\\Marked",
                                     "\\Unmarked", "\\Subscribed", "\\Remote", "\\All",
                                     "\\Archive", "\\Drafts", "\\Flagged", "\\Junk",
                                     "\\Sent", "\\Trash")}


def sha(b):
    return hashlib.sha1(b).hexdigest()[:12]


def render_str(b, limit=LONG_STRING):
    if len(b) > limit:
        return "<%d bytes sha1:%s>" % (len(b), sha(b))
    return json.dumps(b.decode("latin-1"), ensure_ascii=True)


def render(v, limit=LONG_STRING):
    if isinstance(v, list):
        return "(" + " ".join(render(x, limit) for x in v) + ")"
    if isinstance(v, Str):
        return render_str(v, limit)
    if isinstance(v, bytes):
        return render_str(v, limit)
    return v


def flag_name(f):
    if isinstance(f, bytes):
        f = f.decode("latin-1")
    return SYSTEM_FLAGS.get(f.lower(), f)


def render_flags(v):
    if not isinstance(v, list):
        return render(v)
    return "(" + " ".join(sorted(flag_name(f) for f in v)) + ")"


def normalize_code(code):
    """'[UIDVALIDITY 123]' -> '[UIDVALIDITY *]' and the like."""
    if not code:
        return ""
    inner = code[1:-1] if code.endswith("]") else code[1:]
    name, _, arg = inner.partition(" ")
    name = name.upper()
    if name in ("UIDVALIDITY", "HIGHESTMODSEQ"):
        return "[%s *]" % name
    if name == "CAPABILITY":
        return "[CAPABILITY *]"
    if name in ("APPENDUID", "COPYUID"):
        parts = arg.split(" ")
        return "[%s %s]" % (name, " ".join(["*"] + parts[1:]))
    if name == "PERMANENTFLAGS":
        flags = Parser(arg.encode("latin-1")).value()
        return "[PERMANENTFLAGS %s]" % render_flags(flags)
    if name == "MODIFIED":
        return "[MODIFIED %s]" % arg
    return "[%s]" % inner if not arg else "[%s %s]" % (name, arg)


def upper_atom(v):
    return v.upper() if isinstance(v, (Str, bytes)) else v


def norm_params(v):
    if not isinstance(v, list):
        return v
    out = []
    for i, x in enumerate(v):
        out.append(Str(x.upper()) if i % 2 == 0 and isinstance(x, bytes) else x)
    return out


def norm_body(b):
    """BODYSTRUCTURE / BODY: case-insensitive tokens (types, subtypes, parameter names,
    encodings, disposition types) upper-cased, so only real differences remain."""
    if not isinstance(b, list) or not b:
        return b
    if isinstance(b[0], list):  # multipart: parts..., subtype, [params, dsp, lang, loc]
        i = 0
        out = []
        while i < len(b) and isinstance(b[i], list):
            out.append(norm_body(b[i]))
            i += 1
        rest = list(b[i:])
        if rest:
            rest[0] = upper_atom(rest[0])
        if len(rest) > 1:
            rest[1] = norm_params(rest[1])
        if len(rest) > 2:
            rest[2] = norm_dsp(rest[2])
        return out + rest
    out = list(b)
    out[0] = upper_atom(out[0])
    if len(out) > 1:
        out[1] = upper_atom(out[1])
    if len(out) > 2:
        out[2] = norm_params(out[2])
    if len(out) > 5:
        out[5] = upper_atom(out[5])
    t = (out[0], out[1])
    ext = 7
    if out[0] == b"TEXT":
        ext = 8
    elif t == (b"MESSAGE", b"RFC822") and len(out) > 9:
        out[8] = norm_body(out[8])
        ext = 10
    if len(out) > ext + 1:  # md5, then disposition
        out[ext + 1] = norm_dsp(out[ext + 1])
    return out


def norm_dsp(d):
    if isinstance(d, list) and d:
        d = list(d)
        d[0] = upper_atom(d[0])
        if len(d) > 1:
            d[1] = norm_params(d[1])
    return d


class Canon:
    """Turns parsed responses into canonical lines for one step."""

    def __init__(self, known_dates):
        self.known_dates = known_dates

    def fetch_item(self, key, val):
        k = key.upper()
        if k == "FLAGS":
            return "FLAGS " + render_flags(val)
        if k == "MODSEQ":
            return "MODSEQ (*)"
        if k == "INTERNALDATE":
            # The same instant in any zone is the same date; dates the client did not
            # choose are masked.
            d = val.decode("latin-1") if isinstance(val, bytes) else str(val)
            t = internaldate(d)
            return "INTERNALDATE " + (utc(t) if t is not None and t in self.known_dates else '"*"')
        if k in ("BODYSTRUCTURE", "BODY") and isinstance(val, list):
            return k + " " + render(norm_body(val), limit=300)
        if k == "ENVELOPE":
            return k + " " + render(val, limit=300)
        return k + " " + render(val)

    def line(self, resp):
        kind, data = resp
        if kind == "continuation":
            return "+"
        if kind == "garbage":
            return "?? " + data
        if kind == "tagged":
            st, code, _ = data
            return ("TAG %s %s" % (st, normalize_code(code))).rstrip()
        if kind == "untagged-status":
            st, code, _ = data
            if st == "BYE":
                return "* BYE"
            return ("* %s %s" % (st, normalize_code(code))).rstrip()
        if kind == "numbered":
            n, what, vals = data
            if what == "FETCH" and vals and isinstance(vals[0], list):
                items = vals[0]
                pairs = []
                for i in range(0, len(items) - 1, 2):
                    pairs.append(self.fetch_item(str(items[i]), items[i + 1]))
                if len(items) % 2:
                    pairs.append("?? " + render(items[-1]))
                return "* %d FETCH (%s)" % (n, " ".join(sorted(pairs)))
            return ("* %d %s %s" % (n, what, " ".join(render(v) for v in vals))).rstrip()
        what, vals = data
        if what == "CAPABILITY":
            return None  # compared apart
        if what == "ID":
            return "* ID " + ("NIL" if vals == ["NIL"] else "(*)")
        if what in ("FLAGS",) and vals:
            return "* FLAGS " + render_flags(vals[0])
        if what in ("LIST", "LSUB") and len(vals) >= 3:
            attrs = vals[0] if isinstance(vals[0], list) else []
            attrs = sorted(LIST_ATTRS.get(str(a).lower(), str(a)) for a in attrs)
            name = vals[2]
            name = name if isinstance(name, Str) else Str(str(name).encode("latin-1"))
            delim = render(vals[1]) if isinstance(vals[1], bytes) else vals[1]
            return "* %s (%s) %s %s" % (what, " ".join(attrs), delim, render(name))
        if what == "STATUS" and len(vals) >= 2:
            name = vals[0] if isinstance(vals[0], Str) else Str(str(vals[0]).encode("latin-1"))
            items = vals[1] if isinstance(vals[1], list) else []
            pairs = []
            for i in range(0, len(items) - 1, 2):
                k = str(items[i]).upper()
                v = "*" if k in ("UIDVALIDITY", "HIGHESTMODSEQ") else render(items[i + 1])
                pairs.append("%s %s" % (k, v))
            return "* STATUS %s (%s)" % (render(name), " ".join(sorted(pairs)))
        if what == "SEARCH":
            nums = sorted(int(v) for v in vals if isinstance(v, str) and v.isdigit())
            return ("* SEARCH " + " ".join(map(str, nums))).rstrip()
        return ("* %s %s" % (what, " ".join(render(v) for v in vals))).rstrip()


# --- the client -----------------------------------------------------------------------

class Conn(imaplib.IMAP4):
    """imaplib with every byte the server sends kept, so responses can be re-parsed."""

    def __init__(self, port, host="127.0.0.1"):
        self.raw = bytearray()
        super().__init__(host, port, timeout=30)

    def readline(self):
        line = super().readline()
        self.raw += line
        return line

    def read(self, size):
        data = super().read(size)
        self.raw += data
        return data

    def take(self):
        data = bytes(self.raw)
        self.raw.clear()
        return data

    def run(self, *args, literal=None):
        """Sends a command; returns (tagged status, parsed responses)."""
        self.take()
        self.untagged_responses = {}
        self.literal = literal
        try:
            typ, _ = self._simple_command(*args)
        except imaplib.IMAP4.abort as e:
            typ = "ABORT: %s" % e
        except imaplib.IMAP4.error:
            typ = "BAD"
        return typ, parse_responses(self.take())


class Session:
    def __init__(self, args):
        self.args = args
        self.steps = []
        self.checks = []
        self.caps = {}
        self.canon = Canon(set())
        self.appended = {}  # uid -> bytes (INBOX)
        self.fatal = False

    def check(self, ok, what, detail=""):
        self.checks.append({"ok": bool(ok), "what": what, "detail": detail})
        print("%s - %s: %s" % ("ok" if ok else "not ok", self.args.label, what), flush=True)
        if detail and not ok:
            for line in str(detail).splitlines()[:40]:
                print("#   " + line, flush=True)

    def record(self, label, command, responses, ordered=True):
        lines = [x for x in (self.canon.line(r) for r in responses) if x is not None]
        if not ordered:
            lines = sorted(lines)
        self.steps.append({"step": label, "command": command, "ordered": ordered, "lines": lines})
        return lines

    def do(self, conn, label, *args, literal=None, ordered=True, command=None):
        typ, resps = conn.run(*args, literal=literal)
        shown = command or " ".join(a if isinstance(a, str) else a.decode() for a in args)
        if literal is not None:
            shown += " {%d sha1:%s}" % (len(literal), sha(literal))
        self.record(label, shown, resps, ordered)
        return typ, resps

    @staticmethod
    def caps_of(resps):
        for kind, data in resps:
            if kind == "data" and data[0] == "CAPABILITY":
                return sorted(str(v).upper() for v in data[1])
        return None

    @staticmethod
    def code_of(resps, name):
        for kind, data in resps:
            if kind in ("tagged", "untagged-status") and data[1].upper().startswith("[" + name):
                return data[1][1:-1].split(" ")[1:]
        return None

    @staticmethod
    def fetches(resps):
        """{seq: {ITEM: value}} from FETCH responses."""
        out = {}
        for kind, data in resps:
            if kind == "numbered" and data[1] == "FETCH" and data[2] and isinstance(data[2][0], list):
                items = data[2][0]
                d = out.setdefault(data[0], {})
                for i in range(0, len(items) - 1, 2):
                    d[str(items[i]).upper()] = items[i + 1]
        return out

    def connect(self, label):
        conn = Conn(self.args.port, self.args.host)
        greeting = parse_responses(conn.take())
        self.record(label + ": greeting", "(connect; imaplib asks CAPABILITY unless the greeting has it)", greeting)
        for kind, data in greeting:
            if kind == "untagged-status" and data[1].upper().startswith("[CAPABILITY"):
                self.caps.setdefault("greeting", sorted(data[1][1:-1].upper().split()[1:]))
        return conn

    # -- the parts -------------------------------------------------------------------

    def messages(self):
        fixtures = sorted(f for f in os.listdir(self.args.fixtures) if f.endswith(".eml"))
        msgs = []
        for i, name in enumerate(fixtures):
            with open(os.path.join(self.args.fixtures, name), "rb") as f:
                msgs.append((name, f.read()))
        msgs.append(("generated-150k.eml", big_message()))
        return msgs

    def setup(self):
        """APPENDs over a connection of its own (LOGIN), before the 'Thunderbird' one."""
        c = self.connect("setup")
        typ, _ = self.do(c, "setup: LOGIN", "LOGIN", quote(self.args.user), quote(self.args.password),
                         command="LOGIN <user> <password>")
        self.check(typ == "OK", "LOGIN %s" % self.args.user, typ)
        if typ != "OK":
            self.fatal = True
            return
        typ, resps = self.do(c, "setup: STATUS INBOX", "STATUS", "INBOX", "(MESSAGES)")
        st = [d for k, d in resps if k == "data" and d[0] == "STATUS"]
        if not st or st[0][1][1][1:2] != ["0"]:
            self.check(False, "INBOX is empty at the start (run against a fresh account)", st)
            self.fatal = True
            return
        flags_for = {3: "(\\Seen)", 4: "(\\Flagged $Forwarded)", 6: "(\\Answered \\Seen)"}
        ok_all, problems = True, []
        for i, (name, data) in enumerate(self.messages()):
            date = '"%02d-Mar-2024 %02d:%02d:07 +0100"' % (1 + i, 8 + i % 12, (i * 7) % 60)
            self.canon.known_dates.add(internaldate(date.strip('"')))
            flags = flags_for.get(i + 1)
            args = ["APPEND", "INBOX"] + ([flags] if flags else []) + [date]
            typ, resps = self.do(c, "setup: APPEND INBOX %s" % name, *args, literal=data)
            uid = self.code_of(resps, "APPENDUID")
            if typ != "OK" or not uid:
                ok_all = False
                problems.append("%s: %s %s" % (name, typ, resps))
                continue
            self.appended[int(uid[1])] = (name, data)
        self.check(ok_all and len(self.appended) == len(self.messages()),
                   "APPEND of %d messages to INBOX, each answered OK [APPENDUID ...]" % len(self.messages()),
                   "\n".join(problems))
        sent = self.messages()[0][1]
        self.do(c, "setup: APPEND Sent", "APPEND", "Sent", "(\\Seen)", '"05-Apr-2024 12:00:00 +0000"', literal=sent)
        self.canon.known_dates.add(internaldate("05-Apr-2024 12:00:00 +0000"))
        draft = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: unfinished\r\n"
                 b"Message-ID: <draft-1@example.com>\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n\r\nnot done yet\r\n")
        self.do(c, "setup: APPEND Drafts", "APPEND", "Drafts", "(\\Draft \\Seen)", literal=draft)
        self.do(c, "setup: LOGOUT", "LOGOUT")
        c.shutdown()

    def thunderbird(self):
        c = self.connect("tb")
        typ, resps = self.do(c, "tb: CAPABILITY (before login)", "CAPABILITY")
        self.caps["before_login"] = self.caps_of(resps)
        pre = self.caps["before_login"] or []
        if "SASL-IR" in pre and "AUTH=PLAIN" in pre:
            token = base64.b64encode(b"\0" + self.args.user.encode() + b"\0" + self.args.password.encode())
            typ, resps = self.do(c, "tb: AUTHENTICATE PLAIN", "AUTHENTICATE", "PLAIN", token.decode(),
                                 command="AUTHENTICATE PLAIN <token>")
            how = "AUTHENTICATE PLAIN with SASL-IR"
        else:
            typ, resps = self.do(c, "tb: LOGIN", "LOGIN", quote(self.args.user), quote(self.args.password),
                                 command="LOGIN <user> <password>")
            how = "LOGIN (no SASL-IR + AUTH=PLAIN before login)"
        self.check(typ == "OK", how, typ)
        if typ != "OK":
            self.fatal = True
            return
        c.state = "AUTH"
        typ, resps = self.do(c, "tb: CAPABILITY", "CAPABILITY")
        self.caps["after_login"] = self.caps_of(resps)
        self.do(c, "tb: ID", "ID", '("name" "Thunderbird" "version" "128.5.2")')
        self.do(c, "tb: NAMESPACE", "NAMESPACE")
        self.do(c, "tb: LIST", "LIST", '""', '"*"', ordered=False)
        self.do(c, "tb: LSUB", "LSUB", '""', '"*"', ordered=False)
        self.do(c, "tb: SELECT INBOX", "SELECT", "INBOX", ordered=False)
        self.do(c, "tb: UID FETCH 1:* (FLAGS)", "UID", "FETCH", "1:*", "(FLAGS)")
        self.do(c, "tb: header fetch", "UID", "FETCH", "1:*",
                "(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (%s)])" % HEADER_FIELDS)
        self.bodies(c)
        self.do(c, "tb: BODYSTRUCTURE", "UID", "FETCH", "1:*", "(BODYSTRUCTURE)")
        self.do(c, "tb: ENVELOPE", "UID", "FETCH", "1:*", "(ENVELOPE)")
        self.do(c, "tb: INTERNALDATE", "UID", "FETCH", "1:*", "(INTERNALDATE RFC822.SIZE)")
        self.do(c, "tb: sections", "UID", "FETCH", "1:*",
                "(BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2])")
        for f in OTHER_FOLDERS:
            self.do(c, "tb: STATUS %s" % f, "STATUS", f, "(MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)")
        self.do(c, "tb: SEARCH UNSEEN", "UID", "SEARCH", "UNSEEN")
        self.do(c, "tb: SEARCH FLAGGED", "UID", "SEARCH", "FLAGGED")
        self.do(c, "tb: SEARCH SINCE", "UID", "SEARCH", "SINCE", "10-Mar-2024")
        self.do(c, "tb: SEARCH SUBJECT", "UID", "SEARCH", "SUBJECT", '"invitation"')
        self.do(c, "tb: STORE +Seen", "UID", "STORE", "1:3", "+FLAGS", "(\\Seen)")
        self.do(c, "tb: STORE keyword", "UID", "STORE", "4", "+FLAGS", "($label1)")
        self.do(c, "tb: STORE -Seen", "UID", "STORE", "3", "-FLAGS", "(\\Seen)")
        self.do(c, "tb: STORE silent", "UID", "STORE", "6", "+FLAGS.SILENT", "(\\Answered)")
        self.do(c, "tb: FLAGS after STORE", "UID", "FETCH", "1:*", "(FLAGS)")
        self.do(c, "tb: COPY to Archive", "UID", "COPY", "2", "Archive")
        self.do(c, "tb: MOVE to Trash", "UID", "MOVE", "3", "Trash")
        self.do(c, "tb: STORE Deleted", "UID", "STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
        self.do(c, "tb: EXPUNGE", "EXPUNGE")
        self.do(c, "tb: STORE Deleted 2", "UID", "STORE", "4:5", "+FLAGS.SILENT", "(\\Deleted)")
        self.do(c, "tb: UID EXPUNGE", "UID", "EXPUNGE", "4")
        self.do(c, "tb: FLAGS after EXPUNGE", "UID", "FETCH", "1:*", "(FLAGS)")
        # Thunderbird saving into the folder it has open (a draft, a sent copy).
        note = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: saved while open\r\n"
                b"Message-ID: <open-1@example.com>\r\n\r\nsaved\r\n")
        self.do(c, "tb: APPEND to the selected mailbox", "APPEND", "INBOX", "(\\Seen)", literal=note)
        self.do(c, "tb: FLAGS after APPEND", "UID", "FETCH", "1:*", "(FLAGS)")
        for f in ("Trash", "Archive"):
            self.do(c, "tb: STATUS %s after" % f, "STATUS", f, "(MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)")
        # Errors.
        self.do(c, "tb: SELECT missing", "SELECT", "Nonexistent", ordered=False)
        self.do(c, "tb: EXAMINE Archive", "EXAMINE", "Archive", ordered=False)
        self.do(c, "tb: Archive contents", "UID", "FETCH", "1:*", "(FLAGS RFC822.SIZE BODY.PEEK[])")
        self.do(c, "tb: SELECT Trash", "SELECT", "Trash", ordered=False)
        self.do(c, "tb: Trash contents", "UID", "FETCH", "1:*", "(FLAGS RFC822.SIZE BODY.PEEK[])")
        self.do(c, "tb: COPY to missing", "UID", "COPY", "1", "Nonexistent")
        self.do(c, "tb: APPEND to missing", "APPEND", "Nonexistent", literal=b"Subject: x\r\n\r\ny\r\n")
        self.do(c, "tb: bad syntax", "UID", "FETCH", "1:*", "(FLAGS")
        self.do(c, "tb: UNSELECT", "UNSELECT")
        # Folders.
        self.do(c, "tb: CREATE", "CREATE", "Projects/2024")
        self.do(c, "tb: CREATE utf7", "CREATE", '"&AMk-t&AOk-"')
        self.do(c, "tb: LIST after CREATE", "LIST", '""', '"*"', ordered=False)
        self.do(c, "tb: RENAME", "RENAME", "Projects/2024", "Projects/2025")
        self.do(c, "tb: LIST Projects", "LIST", '""', '"Projects*"', ordered=False)
        self.do(c, "tb: CREATE existing", "CREATE", "Projects/2025")
        self.do(c, "tb: DELETE", "DELETE", "Projects/2025")
        self.do(c, "tb: DELETE parent", "DELETE", "Projects")
        self.do(c, "tb: DELETE utf7", "DELETE", '"&AMk-t&AOk-"')
        self.do(c, "tb: LIST after DELETE", "LIST", '""', '"*"', ordered=False)
        self.idle(c)
        self.do(c, "tb: LOGOUT", "LOGOUT")
        c.shutdown()

    def bodies(self, c):
        """BODY.PEEK[]<n.65536> until a chunk comes back short; compared with what was sent."""
        bad_body, bad_size, lines = [], [], []
        for uid in sorted(self.appended):
            name, sent = self.appended[uid]
            got, off, chunks, size = b"", 0, [], None
            while True:
                typ, resps = c.run("UID", "FETCH", str(uid), "(UID RFC822.SIZE BODY.PEEK[]<%d.%d>)" % (off, CHUNK))
                f = list(self.fetches(resps).values())
                part = None
                for d in f:
                    for k, v in d.items():
                        if k.startswith("BODY[]"):
                            part = v
                        if k == "RFC822.SIZE":
                            size = int(v)
                for r in resps:
                    if r[0] == "tagged" or r[0] == "numbered":
                        line = self.canon.line(r)
                        if line.startswith("* ") and "BODY[]" in line:
                            lines.append(line)
                if typ != "OK" or not isinstance(part, bytes):
                    break
                chunks.append(len(part))
                got += part
                off += CHUNK
                if len(part) < CHUNK or len(chunks) > 100:
                    break
            if got != sent:
                bad_body.append("uid %d %s: sent %d bytes, got %d in chunks %s%s" % (
                    uid, name, len(sent), len(got), chunks, first_difference(sent, got)))
            if size != len(sent):
                bad_size.append("uid %d %s: RFC822.SIZE %s, sent %d bytes" % (uid, name, size, len(sent)))
        self.steps.append({"step": "tb: BODY.PEEK[] chunks", "command": "UID FETCH <uid> (UID RFC822.SIZE BODY.PEEK[]<n.65536>)",
                           "ordered": True, "lines": lines})
        self.check(not bad_body, "BODY.PEEK[]<n.65536> chunks of %d messages put together equal the APPENDed bytes"
                   % len(self.appended), "\n".join(bad_body))
        self.check(not bad_size, "RFC822.SIZE equals the APPENDed length", "\n".join(bad_size))

    def idle(self, c):
        """IDLE on INBOX while a second connection APPENDs; EXISTS must come within 1 s."""
        self.do(c, "idle: SELECT INBOX", "SELECT", "INBOX", ordered=False)
        other = self.connect("idle-other")
        typ, _ = self.do(other, "idle-other: LOGIN", "LOGIN", quote(self.args.login_user), quote(self.args.password),
                         command="LOGIN <user> <password>")
        self.check(typ == "OK", "LOGIN as %s" % self.args.login_user, typ)
        c.take()
        tag = c._new_tag()
        c.send(tag + b" IDLE\r\n")
        first = c.readline()
        if not first.startswith(b"+"):
            self.check(False, "IDLE answered with a continuation", first)
            return
        msg = (b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: while idling\r\n"
               b"Date: Tue, 05 Mar 2024 10:00:00 +0000\r\nMessage-ID: <idle-1@example.org>\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nping\r\n")
        result = {}

        def append():
            time.sleep(0.2)
            result["start"] = time.monotonic()
            result["typ"], result["resps"] = other.run("APPEND", "INBOX", literal=msg)
            result["done"] = time.monotonic()

        t = threading.Thread(target=append)
        t.start()
        c.sock.settimeout(5)
        seen, exists_at = [], None
        try:
            while exists_at is None:
                line = c.readline()
                seen.append(line)
                if re.match(rb"\* \d+ EXISTS", line):
                    exists_at = time.monotonic()
        except OSError:
            pass
        t.join()
        self.record("idle-other: APPEND INBOX", "APPEND INBOX {%d sha1:%s}" % (len(msg), sha(msg)),
                    result.get("resps", []))
        if exists_at is not None:
            latency = (exists_at - result["done"]) * 1000
            since_send = (exists_at - result["start"]) * 1000
            self.check(since_send < 1000, "IDLE: '* n EXISTS' %.0f ms after the other connection sent APPEND "
                       "(%.0f ms after its OK)" % (since_send, latency))
            self.idle_ms = since_send
        else:
            self.check(False, "IDLE: '* n EXISTS' within 5 s of another connection's APPEND", b"".join(seen))
            self.fatal = True
            return
        # A flag change from the other connection, then DONE. Whatever arrives is recorded.
        uid = self.code_of(result.get("resps", []), "APPENDUID")
        other.state = "SELECTED"
        if uid:
            other.run("SELECT", "INBOX")
            other.run("UID", "STORE", uid[1], "+FLAGS", "(\\Flagged)")
        time.sleep(0.5)
        c.send(b"DONE\r\n")
        try:
            while True:
                line = c.readline()
                seen.append(line)
                if line.startswith(tag + b" "):
                    break
        except OSError as e:
            seen.append(b"?? " + str(e).encode() + b"\r\n")
        c.sock.settimeout(30)
        c.raw.clear()
        resps = parse_responses(first + b"".join(seen))
        # Untagged responses during IDLE may come in any order (EXISTS, RECENT, FETCH).
        self.record("idle: IDLE ... DONE", "IDLE / DONE", resps, ordered=False)
        self.do(other, "idle-other: LOGOUT", "LOGOUT")
        other.shutdown()

    def condstore(self):
        """ENABLE CONDSTORE on a connection of its own (MODSEQ values are masked)."""
        c = self.connect("condstore")
        self.do(c, "condstore: LOGIN", "LOGIN", quote(self.args.user), quote(self.args.password),
                command="LOGIN <user> <password>")
        self.do(c, "condstore: ENABLE CONDSTORE", "ENABLE", "CONDSTORE")
        self.do(c, "condstore: SELECT INBOX (CONDSTORE)", "SELECT", "INBOX", "(CONDSTORE)", ordered=False)
        self.do(c, "condstore: UID FETCH (FLAGS MODSEQ)", "UID", "FETCH", "1:*", "(FLAGS MODSEQ)")
        self.do(c, "condstore: STATUS HIGHESTMODSEQ", "STATUS", "Sent", "(MESSAGES HIGHESTMODSEQ)")
        self.do(c, "condstore: LOGOUT", "LOGOUT")
        c.shutdown()

    def run(self):
        self.idle_ms = None
        try:
            self.setup()
            if not self.fatal:
                self.thunderbird()
            if not self.fatal:
                self.condstore()
        except (OSError, imaplib.IMAP4.error) as e:
            self.check(False, "the session ran to its end", "%s: %s" % (type(e).__name__, e))
        req = self.args.require_caps.split()
        if req and self.caps.get("after_login") is not None:
            missing = [c for c in req if c.upper() not in self.caps["after_login"]]
            self.check(not missing, "capabilities after login include %s" % " ".join(req),
                       "missing: %s" % " ".join(missing))
        if req and self.caps.get("before_login") is not None:
            self.check("AUTH=PLAIN" in self.caps["before_login"], "AUTH=PLAIN offered before login",
                       " ".join(self.caps["before_login"]))
        out = {"label": self.args.label, "capabilities": self.caps, "checks": self.checks,
               "idle_exists_ms": self.idle_ms, "steps": self.steps}
        with open(self.args.out, "w") as f:
            json.dump(out, f, indent=1)
        return all(c["ok"] for c in self.checks)


def tls_checks(args):
    """STARTTLS on the plain port and implicit TLS on the other: LOGIN, SELECT, LOGOUT.
    The certificate is not verified (a test server's self-signed one)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    failed = 0

    def check(ok, what, detail=""):
        nonlocal failed
        print("%s - %s: %s" % ("ok" if ok else "not ok", args.label, what), flush=True)
        if not ok:
            failed += 1
            print("#   %s" % detail, flush=True)

    for how in ("STARTTLS", "implicit TLS"):
        try:
            if how == "STARTTLS":
                c = imaplib.IMAP4(args.host, args.port, timeout=30)
                before = c.capabilities
                typ, _ = c.starttls(ssl_context=ctx)
                check(typ == "OK" and "STARTTLS" in before, "STARTTLS offered and accepted on port %d" % args.port,
                      "capabilities %s, answer %s" % (" ".join(before), typ))
            else:
                c = imaplib.IMAP4_SSL(args.host, args.tls_port, ssl_context=ctx, timeout=30)
            version = c.sock.version()
            typ, _ = c.login(args.user, args.password)
            typ2, data = c.select("INBOX")
            check(typ == "OK" and typ2 == "OK", "%s (%s): LOGIN and SELECT INBOX (%s messages)"
                  % (how, version, data[0].decode() if data and data[0] else "?"), (typ, typ2, data))
            c.logout()
        except (OSError, imaplib.IMAP4.error) as e:
            check(False, "%s: LOGIN and SELECT INBOX" % how, "%s: %s" % (type(e).__name__, e))
    return failed


def internaldate(d):
    """'01-Mar-2024 08:00:07 +0100' (or ' 1-Mar-...') -> seconds since the epoch."""
    t = imaplib.Internaldate2tuple(b'INTERNALDATE "' + d.strip().rjust(26).encode() + b'"')
    return None if t is None else int(time.mktime(t))


def utc(t):
    return time.strftime('"%Y-%m-%d %H:%M:%S UTC"', time.gmtime(t))


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "; first difference at byte %d: sent %r, got %r" % (i, a[max(0, i - 20):i + 20], b[max(0, i - 20):i + 20])
    return ""


def big_message():
    """A deterministic 150 KiB multipart/mixed message (three 64 KiB chunks)."""
    rnd = random.Random(20240301)
    blob = bytes(rnd.getrandbits(8) for _ in range(108000))
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    text = b"".join(b"Line %d of the covering note, long enough to wrap nowhere.\r\n" % i for i in range(120))
    return (b"From: Carol <carol@example.net>\r\nTo: Alice <alice@example.com>\r\n"
            b"Subject: quarterly data (large)\r\nDate: Fri, 01 Mar 2024 09:00:00 +0000\r\n"
            b"Message-ID: <big-1@example.net>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text +
            b"\r\n--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"\r\n--b1--\r\n")


# --- compare --------------------------------------------------------------------------

def load_allow(path):
    """(line rules, rewrite rules) from the allow-list file."""
    rules, rewrites = [], []
    if not path:
        return rules, rewrites
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [p.strip() for p in line.split(" | ")]
            where = "%s:%d" % (os.path.basename(path), n)
            if parts[0] == "rewrite" and len(parts) == 5:
                rewrites.append({"step": re.compile(parts[1]), "pattern": re.compile(parts[2]),
                                 "replacement": parts[3], "reason": parts[4], "where": where, "used": 0})
            elif parts[0] in ("reference", "ours", "both") and len(parts) == 4:
                rules.append({"side": parts[0], "step": re.compile(parts[1]), "line": re.compile(parts[2]),
                              "reason": parts[3], "where": where, "used": 0})
            else:
                sys.exit("%s: expected 'SIDE | STEP-REGEX | LINE-REGEX | reason' or "
                         "'rewrite | STEP-REGEX | PATTERN | REPLACEMENT | reason'" % where)
    return rules, rewrites


def rewrite(rewrites, step, lines, ordered):
    """Applies the rewrite rules of STEP to each line (both transcripts get the same)."""
    out = []
    for line in lines:
        for r in rewrites:
            if r["step"].search(step["step"]):
                new = r["pattern"].sub(r["replacement"], line)
                if new != line:
                    new = re.sub(r"  +", " ", new.replace("( ", "(").replace(" )", ")"))
                    r["used"] += 1
                    line = new
        out.append(line)
    return out if ordered else sorted(out)


def allowed(rules, side, step, line):
    for r in rules:
        if r["side"] in (side, "both") and r["step"].search(step) and r["line"].search(line):
            r["used"] += 1
            return r
    return None


def compare(args):
    with open(args.reference) as f:
        ref = json.load(f)
    with open(args.ours) as f:
        ours = json.load(f)
    rules, rewrites = load_allow(args.allow)
    a, b = ref["label"], ours["label"]
    for key in ("greeting", "before_login", "after_login"):
        x = set(ref["capabilities"].get(key) or [])
        y = set(ours["capabilities"].get(key) or [])
        if x != y:
            print("# capabilities %s: only %s: %s" % (key, a, " ".join(sorted(x - y)) or "-"))
            print("# capabilities %s: only %s: %s" % (key, b, " ".join(sorted(y - x)) or "-"))
    rsteps = {s["step"]: s for s in ref["steps"]}
    osteps = {s["step"]: s for s in ours["steps"]}
    names = [s["step"] for s in ref["steps"]] + [s["step"] for s in ours["steps"] if s["step"] not in rsteps]
    bad = good = 0
    for name in names:
        rs, os_ = rsteps.get(name), osteps.get(name)
        if rs is None or os_ is None:
            side = b if rs is None else a
            print("diff - step %r ran only against %s" % (name, side))
            bad += 1
            continue
        if rs["command"] != os_["command"]:
            print("# step %r: commands differ: %s: %s / %s: %s" % (name, a, rs["command"], b, os_["command"]))
        x, y = rs["lines"], os_["lines"]
        if x == y:
            continue
        x = rewrite(rewrites, rs, x, rs["ordered"])
        y = rewrite(rewrites, os_, y, os_["ordered"])
        if x == y:
            continue
        if rs["ordered"]:
            sm = difflib.SequenceMatcher(a=x, b=y, autojunk=False)
            blocks = [(x[i1:i2], y[j1:j2]) for op, i1, i2, j1, j2 in sm.get_opcodes() if op != "equal"]
        else:  # the order of these responses does not matter: one block, as multisets
            cx, cy = collections.Counter(x), collections.Counter(y)
            blocks = [(sorted((cx - cy).elements()), sorted((cy - cx).elements()))]
        for only_a, only_b in blocks:
            verdicts = [(allowed(rules, "reference", name, l), a, l) for l in only_a] + \
                       [(allowed(rules, "ours", name, l), b, l) for l in only_b]
            if all(v[0] for v in verdicts):
                for r, side, l in verdicts:
                    print("allowed - %s: %s sends %s  (%s: %s)" % (name, side, l[:300], r["where"], r["reason"]))
                good += 1
                continue
            bad += 1
            print("diff - %s  [command: %s]" % (name, rs["command"]))
            for l in only_a:
                print("#   %-8s %s" % (a + ":", l))
            for l in only_b:
                print("#   %-8s %s" % (b + ":", l))
            for l1, l2 in zip(only_a, only_b):
                hint = first_char_difference(l1, l2)
                if hint:
                    print("#   " + hint)
    for r in rewrites:
        if r["used"]:
            print("allowed - %d lines rewritten by %s (%s)" % (r["used"], r["where"], r["reason"]))
    for r in rules + rewrites:
        if not r["used"]:
            print("# allow-list entry not needed this run: %s (%s)" % (r["where"], r["reason"]))
    if bad:
        print("not ok - %s's transcript differs from %s's in %d places not on the allow-list (%d allowed)"
              % (b, a, bad, good))
        return 1
    print("ok - %s's transcript equals %s's (%d allowed differences)" % (b, a, good))
    return 0


def first_char_difference(x, y):
    if len(x) < 120 and len(y) < 120:
        return ""
    for i, (p, q) in enumerate(zip(x, y)):
        if p != q:
            return "first difference at character %d: ...%s... / ...%s..." % (i, x[max(0, i - 60):i + 60], y[max(0, i - 60):i + 60])
    return "one line is a prefix of the other (lengths %d, %d)" % (len(x), len(y))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--login-user", help="name for the second connection's LOGIN (default --user)")
    r.add_argument("--fixtures", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--label", default="server")
    r.add_argument("--require-caps", default="")
    t = sub.add_parser("tls")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, required=True, help="plain IMAP port (STARTTLS)")
    t.add_argument("--tls-port", type=int, required=True, help="implicit TLS port")
    t.add_argument("--user", required=True)
    t.add_argument("--password", required=True)
    t.add_argument("--label", default="server")
    c = sub.add_parser("compare")
    c.add_argument("reference")
    c.add_argument("ours")
    c.add_argument("--allow", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "imap_allowed_diffs.txt"))
    args = ap.parse_args()
    if args.cmd == "run":
        args.login_user = args.login_user or args.user
        sys.exit(0 if Session(args).run() else 1)
    if args.cmd == "tls":
        sys.exit(1 if tls_checks(args) else 0)
    sys.exit(compare(args))


if __name__ == "__main__":
    main()
