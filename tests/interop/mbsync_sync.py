#!/usr/bin/env python3
"""Two-way sync of a 1,000-message mailbox with mbsync (isync), checked message by message.

    mbsync_sync.py run --port P --user U --password W --work DIR [--label NAME] [--count 1000]
    mbsync_sync.py generate DIR COUNT [--seed N]      (a Maildir of COUNT messages, for scripts/imap-bench)

`run` needs mbsync (Debian: isync) and an IMAP account on 127.0.0.1:P (plain IMAP,
AUTHENTICATE PLAIN) whose INBOX is empty. In DIR it:
  (a) generates COUNT varied messages (1-50 KiB, log-uniform; plain, quoted-printable,
      multipart/alternative and multipart/mixed with a base64 attachment; some already
      Seen, Flagged or Replied) in a local Maildir and pushes them with mbsync
      (Patterns *, Create Both, Expunge Both, SyncState *);
  (b) pulls the account into a second, empty Maildir with a fresh mbsync state;
  (c) compares every pulled message with the generated one by content (the X-TUID
      header mbsync may add on upload is ignored, and so is CRLF vs LF), flags included;
  (d) marks 100 messages Seen in the first Maildir, flags 100 others \\Flagged on the
      server (imaplib), deletes 10 locally and expunges 10 on the server, syncs both
      Maildirs again, and checks that the server and both Maildirs agree on which
      messages exist and on their flags.
It prints "ok - ..." / "not ok - ..." lines (with mbsync's output on failure) and exits
1 if any check failed. Only stdlib Python besides mbsync.
"""

import argparse
import base64
import imaplib
import os
import random
import re
import subprocess
import sys
import time

WORDS = ("relay invoice lightning mailbox meeting quarterly report draft release backup "
         "server coffee garden weekend budget ticket review outbox sync folder thread "
         "calendar photo travel update summary agenda patch build deploy invoice").split()
NAMES = [("Alice Example", "alice@example.com"), ("Bob Builder", "bob@example.org"),
         ("Carol Reyes", "carol@example.net"), ("Dave Kim", "dave@example.com"),
         ("Jürgen Müller", "juergen@example.net"), ("Søren Kjær", "soeren@example.org")]


def words(rnd, n):
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def text_block(rnd, size, utf8=False):
    lines, total = [], 0
    while total < size:
        line = words(rnd, rnd.randint(5, 12))
        if utf8 and rnd.random() < 0.3:
            line += " — grüße, señor, 東京"
        lines.append(line)
        total += len(line.encode()) + 1
    return "\n".join(lines) + "\n"


def qp(s):
    out = []
    for line in s.split("\n"):
        enc, width = "", 0
        for ch in line:
            b = ch.encode()
            piece = "".join("=%02X" % c for c in b) if (len(b) > 1 or ch == "=") else ch
            if width + len(piece) > 72:
                enc += "=\n"
                width = 0
            enc += piece
            width += len(piece)
        out.append(enc)
    return "\n".join(out)


def b64(data):
    return base64.encodebytes(data).decode()


def encoded_word(name):
    if all(ord(c) < 128 for c in name):
        return '"%s"' % name
    return "=?UTF-8?B?%s?=" % base64.b64encode(name.encode()).decode()


def make_message(rnd, i):
    """(message bytes with LF line ends, Maildir flags) for message number i."""
    size = int(1024 * (50 ** rnd.random()))  # 1 KiB .. 50 KiB, log-uniform
    frm, to = rnd.choice(NAMES), rnd.choice(NAMES)
    kind = rnd.choices(["plain", "qp", "alternative", "mixed"], [50, 15, 20, 15])[0]
    day = 1 + i % 28
    head = ("From: %s <%s>\nTo: %s <%s>\nSubject: [%d] %s\nDate: Mon, %02d Apr 2024 %02d:%02d:%02d +0200\n"
            "Message-ID: <gen-%d@sync.example.test>\nMIME-Version: 1.0\n" % (
                encoded_word(frm[0]), frm[1], encoded_word(to[0]), to[1], i, words(rnd, 4).capitalize(),
                day, rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59), i))
    if i % 7 == 0 and i > 1:
        head += "In-Reply-To: <gen-%d@sync.example.test>\nReferences: <gen-%d@sync.example.test>\n" % (i - 1, i - 1)
    if kind == "plain":
        body = text_block(rnd, size - len(head))
        msg = head + "Content-Type: text/plain; charset=us-ascii\n\n" + body
    elif kind == "qp":
        body = qp(text_block(rnd, (size - len(head)) * 2 // 3, utf8=True))
        msg = head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + body
    elif kind == "alternative":
        t = text_block(rnd, (size - len(head)) // 2)
        html = "<html><body>" + "".join("<p>%s</p>\n" % l for l in t.splitlines()) + "</body></html>\n"
        bnd = "alt-%d-%x" % (i, rnd.getrandbits(32))
        msg = (head + 'Content-Type: multipart/alternative; boundary="%s"\n\n' % bnd +
               "--%s\nContent-Type: text/plain; charset=us-ascii\n\n%s\n" % (bnd, t) +
               "--%s\nContent-Type: text/html; charset=us-ascii\n\n%s\n--%s--\n" % (bnd, html, bnd))
    else:
        t = text_block(rnd, 400)
        blob = bytes(rnd.getrandbits(8) for _ in range(max(100, (size - len(head) - 800) * 3 // 4)))
        bnd = "mix-%d-%x" % (i, rnd.getrandbits(32))
        msg = (head + 'Content-Type: multipart/mixed; boundary="%s"\n\n' % bnd +
               "This is a multi-part message in MIME format.\n" +
               "--%s\nContent-Type: text/plain; charset=us-ascii\n\n%s\n" % (bnd, t) +
               '--%s\nContent-Type: application/octet-stream; name="file-%d.bin"\n' % (bnd, i) +
               'Content-Disposition: attachment; filename="file-%d.bin"\nContent-Transfer-Encoding: base64\n\n' % i +
               b64(blob) + "--%s--\n" % bnd)
    flags = rnd.choices(["", "S", "FS", "RS", "F"], [60, 25, 5, 7, 3])[0]
    return msg.encode(), flags


def generate(folder, count, seed=1):
    """A Maildir at FOLDER (INBOX) with COUNT messages; returns {message-id: (bytes, flags)}."""
    rnd = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    out = {}
    for i in range(1, count + 1):
        data, flags = make_message(rnd, i)
        base = "1712000000.M%dP1.gen" % i
        if flags:
            path = os.path.join(folder, "cur", base + ":2," + flags)
        else:
            path = os.path.join(folder, "new", base)
        with open(path, "wb") as f:
            f.write(data)
        out[msgid(data)] = (data, flags)
    return out


def msgid(data):
    m = re.search(rb"^Message-ID:\s*(<[^>]*>)", data, re.M | re.I)
    return m.group(1).decode() if m else None


def normalized(data):
    data = data.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    head = re.sub(rb"(?mi)^X-TUID:[^\n]*\n", b"", head + b"\n")[:-1]
    return head + sep + body


def read_maildir(folder):
    """{message-id: (normalized bytes, flags, path)} of a Maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(folder, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                data = f.read()
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            key = msgid(data) or "no-id:" + name
            if key in out:
                key += " (duplicate %s)" % name
            out[key] = (normalized(data), "".join(sorted(flags)), path)
    return out


def set_flags(path, flags):
    folder = os.path.dirname(os.path.dirname(path))
    base = os.path.basename(path).split(":2,", 1)[0]
    new = os.path.join(folder, "cur", base + ":2," + "".join(sorted(flags)))
    os.rename(path, new)
    return new


IMAP_TO_MAILDIR = {"\\seen": "S", "\\flagged": "F", "\\answered": "R", "\\draft": "D"}


class Run:
    def __init__(self, args):
        self.a = args
        self.failed = 0
        self.passed = 0
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)

    def check(self, ok, what, detail=""):
        print("%s - %s: mbsync: %s" % ("ok" if ok else "not ok", self.a.label, what), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            for line in str(detail).splitlines()[:60]:
                print("#   " + line, flush=True)

    def rc(self):
        path = os.path.join(self.work, "mbsyncrc")
        stores = ""
        for name in ("near1", "near2"):
            stores += ("MaildirStore %s\nPath %s/%s/\nInbox %s/%s/INBOX\nSubFolders Verbatim\n\n"
                       % (name, self.work, name, self.work, name))
            stores += ("Channel %s\nFar :far:\nNear :%s:\nPatterns *\nCreate Both\nExpunge Both\n"
                       "SyncState *\n\n" % (name, name))
        with open(path, "w") as f:
            # FSync no: no fsync per message; this checks content, not durability.
            f.write("FSync no\n\nIMAPAccount acct\nHost 127.0.0.1\nPort %d\nUser %s\nPass \"%s\"\nSSLType None\n"
                    "AuthMechs %s\nTimeout 120\n\nIMAPStore far\nAccount acct\n\n%s"
                    % (self.a.port, self.a.user, self.a.password, self.a.auth_mech, stores))
        return path

    def mbsync(self, channel, what):
        log = os.path.join(self.work, "mbsync-%s-%d.log" % (channel, int(time.time() * 1000)))
        t0 = time.monotonic()
        try:
            p = subprocess.run(["mbsync", "-c", self.rcfile, "-V", channel], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=self.a.timeout)
            out, status = p.stdout.decode("utf-8", "replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out, status = (e.stdout or b"").decode("utf-8", "replace"), "timeout after %ds" % self.a.timeout
        secs = time.monotonic() - t0
        with open(log, "w") as f:
            f.write(out)
        tail = "\n".join(out.splitlines()[-40:])
        self.check(status == 0, "%s (mbsync %s, %.1f s)" % (what, channel, secs),
                   "exit status %s; last lines of %s:\n%s" % (status, os.path.basename(log), tail))
        return status == 0

    def imap(self):
        c = imaplib.IMAP4("127.0.0.1", self.a.port, timeout=60)
        c.login(self.a.user, self.a.password)
        return c

    def server_state(self):
        """{message-id: (flags, uid)} of the server's INBOX."""
        c = self.imap()
        c.select("INBOX")
        typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, hdr = item
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            fl = re.search(rb"FLAGS \(([^)]*)\)", meta)
            flags = fl.group(1).decode().split() if fl else []
            letters = "".join(sorted(IMAP_TO_MAILDIR[f.lower()] for f in flags if f.lower() in IMAP_TO_MAILDIR))
            out[msgid(hdr) or "no-id:%d" % uid] = (letters, uid)
        c.logout()
        return out

    def compare_contents(self, expected, got, where):
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        differ = [k for k in expected if k in got and got[k][0] != normalized(expected[k][0])]
        detail = []
        if missing:
            detail.append("missing %d: %s" % (len(missing), " ".join(sorted(missing)[:10])))
        if extra:
            detail.append("unexpected %d: %s" % (len(extra), " ".join(sorted(extra)[:10])))
        for k in differ[:5]:
            a, b = normalized(expected[k][0]), got[k][0]
            i = next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            detail.append("%s differs (%d vs %d bytes) at byte %d: expected %r, got %r"
                          % (k, len(a), len(b), i, a[max(0, i - 30):i + 30], b[max(0, i - 30):i + 30]))
        if len(differ) > 5:
            detail.append("... %d messages differ in all" % len(differ))
        self.check(not (missing or extra or differ),
                   "%s: all %d messages arrived with the same content" % (where, len(expected)), "\n".join(detail))

    def compare_flags(self, expected, got, where):
        wrong = ["%s: expected %r, got %r" % (k, expected[k], got[k]) for k in sorted(expected)
                 if k in got and expected[k] != got[k]]
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        detail = wrong[:15]
        if missing:
            detail.append("missing %d: %s" % (len(missing), " ".join(sorted(missing)[:10])))
        if extra:
            detail.append("unexpected %d: %s" % (len(extra), " ".join(sorted(extra)[:10])))
        self.check(not (wrong or missing or extra), "%s: the same %d messages with the same flags%s"
                   % (where, len(expected), " (%d wrong)" % len(wrong) if wrong else ""), "\n".join(detail))

    def run(self):
        self.rcfile = self.rc()
        near1 = os.path.join(self.work, "near1", "INBOX")
        near2 = os.path.join(self.work, "near2", "INBOX")
        expected = generate(near1, self.a.count, seed=self.a.seed)
        total = sum(len(v[0]) for v in expected.values())
        print("# %s: generated %d messages, %.1f MiB, in %s" % (self.a.label, len(expected), total / 2**20, near1))

        # (a) push
        if not self.mbsync("near1", "push %d messages to an empty account" % len(expected)):
            return
        server = self.server_state()
        self.check(len(server) == len(expected) and set(server) == set(expected),
                   "the server's INBOX holds the %d messages" % len(expected),
                   "server has %d, %d of them expected" % (len(server), len(set(server) & set(expected))))
        self.compare_flags({k: "".join(sorted(v[1])) for k, v in expected.items()},
                           {k: v[0] for k, v in server.items()}, "after the push, the server")

        # (b) pull with a fresh state, (c) compare
        os.makedirs(os.path.dirname(near2), exist_ok=True)
        if not self.mbsync("near2", "pull the account into an empty Maildir"):
            return
        got = read_maildir(near2)
        self.compare_contents(expected, got, "pulled Maildir")
        self.compare_flags({k: "".join(sorted(v[1])) for k, v in expected.items()},
                           {k: v[1] for k, v in got.items()}, "pulled Maildir")

        # (d) changes on both sides
        rnd = random.Random(self.a.seed + 1)
        local = read_maildir(near1)
        ids = sorted(expected)
        rnd.shuffle(ids)
        unseen = [k for k in ids if "S" not in local[k][1]]
        unflagged = [k for k in ids if "F" not in local[k][1]]
        mark_seen = unseen[:100]
        mark_flagged = [k for k in unflagged if k not in mark_seen][:100]
        rest = [k for k in ids if k not in mark_seen and k not in mark_flagged]
        delete_local, expunge_server = rest[:10], rest[10:20]
        for k in mark_seen:
            set_flags(local[k][2], local[k][1] + "S")
        for k in delete_local:
            os.unlink(local[k][2])
        server = self.server_state()
        c = self.imap()
        c.select("INBOX")
        flag_uids = ",".join(str(server[k][1]) for k in mark_flagged)
        del_uids = ",".join(str(server[k][1]) for k in expunge_server)
        t1, _ = c.uid("STORE", flag_uids, "+FLAGS.SILENT", "(\\Flagged)")
        t2, _ = c.uid("STORE", del_uids, "+FLAGS.SILENT", "(\\Deleted)")
        t3, gone = c.expunge()
        c.logout()
        gone = [g for g in gone if g is not None]
        self.check((t1, t2, t3) == ("OK", "OK", "OK"),
                   "imaplib: \\Flagged on 100 messages, 10 expunged on the server", (t1, t2, t3))
        self.check(len(gone) == 10, "the server's EXPUNGE answered '* n EXPUNGE' for each of the 10",
                   "untagged EXPUNGE responses: %s" % gone)
        left = self.server_state()
        self.check(len(left) == len(server) - 10 and not set(expunge_server) & set(left),
                   "a new session sees %d messages, without the 10 expunged" % (len(server) - 10),
                   "it sees %d, %d of the expunged ones" % (len(left), len(set(expunge_server) & set(left))))
        want = {}
        for k, (data, flags) in expected.items():
            if k in delete_local or k in expunge_server:
                continue
            f = set(flags)
            if k in mark_seen:
                f.add("S")
            if k in mark_flagged:
                f.add("F")
            want[k] = "".join(sorted(f))
        if not self.mbsync("near1", "sync back: 100 seen and 10 deleted locally, 100 flagged and 10 expunged on the server"):
            return
        if not self.mbsync("near2", "sync the second Maildir again"):
            return
        server = self.server_state()
        self.compare_flags(want, {k: v[0] for k, v in server.items()}, "after the two-way sync, the server")
        self.compare_flags(want, {k: v[1] for k, v in read_maildir(near1).items()},
                           "after the two-way sync, the first Maildir")
        got = read_maildir(near2)
        self.compare_flags(want, {k: v[1] for k, v in got.items()}, "after the two-way sync, the second Maildir")
        self.compare_contents({k: expected[k] for k in want}, got, "second Maildir after the two-way sync")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--label", default="server")
    r.add_argument("--count", type=int, default=1000)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--auth-mech", default="PLAIN")
    r.add_argument("--timeout", type=int, default=120, help="seconds one mbsync run may take")
    g = sub.add_parser("generate")
    g.add_argument("folder")
    g.add_argument("count", type=int)
    g.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "generate":
        msgs = generate(args.folder, args.count, args.seed)
        print("%d messages, %d bytes" % (len(msgs), sum(len(v[0]) for v in msgs.values())))
        return 0
    run = Run(args)
    try:
        run.run()
    except (OSError, imaplib.IMAP4.error) as e:
        run.check(False, "ran to its end", "%s: %s" % (type(e).__name__, e))
    print("# %s: mbsync: %d passed, %d failed" % (args.label, run.passed, run.failed))
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
