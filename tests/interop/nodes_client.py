#!/usr/bin/env python3
"""The peers of tests/interop/nodes_peers.sh (two daemons on one PostgreSQL).

  nodes_client.py login --port P --user U --password W
      LOGIN and SELECT INBOX over plain IMAP on 127.0.0.1:P; prints "ok - ..." or
      "not ok - ..." and exits 0 or 1.

  nodes_client.py wake-on-mail --idle-port B --mx-port A --user U --password W
                               --rcpt ADDR [--limit 1.0] [--wait 10]
      IDLEs on INBOX at B, then sends one message to ADDR through the SMTP server at A
      (no TLS, a stranger's mail) and measures from A's 250 after DATA to the
      "* n EXISTS" at B. Prints "latency S" and exits 0 if S < --limit.

  nodes_client.py wake-on-flag --idle-port A --store-port B --user U --password W
                               [--limit 1.0] [--wait 10]
      IDLEs on INBOX at A, then on B sets \\Flagged on INBOX's last message (STORE) and
      measures from sending the STORE to the "* n FETCH (... \\Flagged ...)" at A.

  nodes_client.py attachment --mx-port A --imap-port B --user U --password W --rcpt ADDR
                             [--size BYTES] [--wait 10]
      Sends a message with a random binary attachment to ADDR through the SMTP server at
      A (no TLS), then on B's IMAP waits for it in INBOX (by Subject), fetches it whole
      and checks the attachment's bytes; prints "ok ..." or "FAIL ..." and exits 0 or 1.

  nodes_client.py sink --dir DIR --port N --hold-rcpt PREFIX [--hold-seconds S]
                       [--delay-seconds D]
      tests/interop/outbound_sink.py's sink, except that the first RCPT of each address
      whose local part starts with PREFIX is answered only after S seconds ("hold
      rcpt ADDR" is printed when it starts); later RCPTs of the same address pass
      after D seconds, like every other RCPT. A sender that dies meanwhile leaves no
      record.

  nodes_client.py submit --port P --user U --password W --from ADDR --rcpt ADDR...
                         --message-id-prefix X [--domain D]
      One STARTTLS + AUTH PLAIN session on 127.0.0.1:P (certificate not verified) that
      submits one message to each RCPT in turn, Message-ID <X-i@D> for the i-th (from 1);
      prints "submitted N" and exits 0 only if every one got 250.

  nodes_client.py ws-count --port P --to-port Q [--hold-file PATH]
      A TCP proxy from 127.0.0.1:P to a WebSocket relay at 127.0.0.1:Q that reads the
      relay's frames (it strips Sec-WebSocket-Extensions from the client's handshake, so
      frames stay uncompressed) and prints one line per OK frame the relay sends:
      "OK <id> accepted=<true|false> reason=<reason> pid=<pid>", and "INVOICE <id>
      pid=<pid>"; pid is the process that opened the connection (from /proc, "?" when
      it cannot be told). When PATH appears, open connections are closed ("holding from
      now on; ..."), and while it exists a new connection is held instead: nothing is
      passed to the relay, nothing answered, "HOLD pid=<pid>" printed; it is closed
      when the client goes or after 60 s.

  nodes_client.py ws-tally --log FILE --expect N [--wait 60] [--settle 3]
      Reads ws-count's output until N distinct message ids were accepted, then --settle
      seconds more; exits 0 only if exactly N ids got an OK and each exactly one OK, an
      accepted one (a second PUBLISH of an id, even answered "duplicate", fails).

  nodes_client.py imap-count --port P --user U --password W --subject S... [--wait 30]
      Waits until INBOX holds a message with each Subject (exactly that text), then
      prints how many carry each; exits 0 only if every count is exactly 1. (Native
      LNMP mail is shown with a Message-ID of its own, so the subject names it.)

  nodes_client.py count --dir DIR --message-id ID... [--expect 1] [--wait 60] [--settle 3]
      Counts the sink's records per Message-ID: waits until each has --expect, then
      --settle seconds more; prints one line per Message-ID and exits 0 only if every
      count is exactly --expect.

Stdlib only, plus aiosmtpd for `sink` (tests/interop/requirements.txt).
"""

import argparse
import os
import re
import smtplib
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class Imap:
    """A minimal line-level IMAP client (imaplib hides the timing of untagged data)."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.n = 0
        greeting = self.line(timeout)
        if not greeting.startswith(b"* OK"):
            raise RuntimeError("greeting: %r" % greeting)

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line within %.1f s" % timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        # Literals: read their bytes and the rest of the line into one.
        m = re.search(rb"\{(\d+)\}$", line)
        while m:
            size = int(m.group(1))
            while len(self.buf) < size:
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the server")
                self.buf += chunk
            lit, self.buf = self.buf[:size], self.buf[size:]
            rest = self.line(max(0.1, deadline - time.monotonic()))
            line = line + b"\r\n" + lit + rest
            m = re.search(rb"\{(\d+)\}$", rest)
        return line

    def cmd(self, text, timeout=30):
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            line = self.line(timeout)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError("%s: %r" % (text.split()[0], line))
                return untagged
            untagged.append(line)

    def login(self, user, password):
        q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
        self.cmd("LOGIN %s %s" % (q(user), q(password)))

    def idle(self, timeout=30):
        self.n += 1
        self.idle_tag = b"t%d" % self.n
        self.sock.sendall(self.idle_tag + b" IDLE\r\n")
        while True:
            line = self.line(timeout)
            if line.startswith(b"+"):
                return
            if line.startswith(self.idle_tag):
                raise RuntimeError("IDLE refused: %r" % line)

    def done(self):
        self.sock.sendall(b"DONE\r\n")
        while True:
            line = self.line(10)
            if line.startswith(self.idle_tag + b" "):
                return

    def close(self):
        try:
            self.cmd("LOGOUT", 5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.sock.close()


def wait_untagged(imap, pattern, wait):
    """Reads untagged lines until one matches PATTERN; returns (monotonic time, line)."""
    deadline = time.monotonic() + wait
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing matching %r within %.0f s; saw %r" % (pattern, wait, seen))
        line = imap.line(left)
        seen.append(line)
        if re.search(pattern, line):
            return time.monotonic(), line


def idle_latency(imap, pattern, since, args, who):
    """Waits (args.wait) on IMAP, in IDLE, for an untagged line matching PATTERN; prints
    what WHO said and "latency S" (S from the monotonic time SINCE), ends the IDLE and
    closes. Returns 0 if S < args.limit, else 1 (and 1 with "latency none" on a timeout)."""
    try:
        seen, line = wait_untagged(imap, pattern, args.wait)
    except TimeoutError as e:
        print("latency none: %s" % e)
        return 1
    latency = max(0.0, seen - since)
    print("# %s said %s" % (who, line.decode(errors="replace")))
    print("latency %.3f" % latency)
    imap.done()
    imap.close()
    return 0 if latency < args.limit else 1


def login(args):
    try:
        imap = Imap(args.port)
        imap.login(args.user, args.password)
        exists = [x for x in imap.cmd("SELECT INBOX") if x.endswith(b" EXISTS")]
        imap.close()
        print("ok - LOGIN %s and SELECT INBOX on port %d (%s)"
              % (args.user, args.port, exists[0].decode() if exists else "no EXISTS"))
        return 0
    except Exception as e:  # noqa: BLE001 - reported
        print("not ok - LOGIN %s on port %d: %s: %s" % (args.user, args.port, type(e).__name__, e))
        return 1


def wake_on_mail(args):
    imap = Imap(args.idle_port)
    imap.login(args.user, args.password)
    imap.cmd("SELECT INBOX")
    imap.idle()
    mid = "<wake-%d-%d@example.org>" % (os.getpid(), time.time_ns())
    msg = ("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: wake node B\r\n"
           "Message-ID: %s\r\nDate: %s\r\n\r\nsent to node A, seen on node B\r\n"
           % (args.rcpt, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())))
    with smtplib.SMTP("127.0.0.1", args.mx_port, timeout=30) as s:
        s.ehlo("mx.example.org")
        code, reply = s.docmd("MAIL FROM:<bob@example.org>")
        assert code == 250, (code, reply)
        code, reply = s.docmd("RCPT TO:<%s>" % args.rcpt)
        assert code == 250, (code, reply)
        code, reply = s.data(msg.encode())
        accepted = time.monotonic()
        print("# node A answered %d %s" % (code, reply.decode(errors="replace")))
        if code != 250:
            return 1
    return idle_latency(imap, rb"^\* \d+ EXISTS", accepted, args, "node B")


def wake_on_flag(args):
    idler = Imap(args.idle_port)
    idler.login(args.user, args.password)
    exists = [x for x in idler.cmd("SELECT INBOX") if x.endswith(b" EXISTS")]
    n = int(exists[0].split()[1]) if exists else 0
    if n == 0:
        print("latency none: INBOX is empty")
        return 1
    idler.idle()
    setter = Imap(args.store_port)
    setter.login(args.user, args.password)
    setter.cmd("SELECT INBOX")
    # Timed from the STORE sent, not B's OK: A may well see the flag before B's OK
    # reaches this client.
    stored = time.monotonic()
    setter.cmd("STORE %d +FLAGS (\\Flagged)" % n)
    result = idle_latency(idler, rb"^\* \d+ FETCH .*\\Flagged", stored, args, "node A")
    setter.close()
    return result


def attachment(args):
    import email
    import email.policy
    from email.message import EmailMessage

    blob = os.urandom(args.size)
    subject = "attachment %d" % time.time_ns()
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.org>"
    msg["To"] = args.rcpt
    msg["Subject"] = subject
    msg["Message-ID"] = "<att-%d@example.org>" % time.time_ns()
    msg.set_content("an attachment, stored by node A, read on node B\n")
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="random.bin")
    with smtplib.SMTP("127.0.0.1", args.mx_port, timeout=30) as s:
        s.ehlo("mx.example.org")
        s.sendmail("bob@example.org", [args.rcpt], msg.as_bytes(policy=email.policy.SMTP))
    imap = Imap(args.imap_port)
    imap.login(args.user, args.password)
    imap.cmd("SELECT INBOX")
    deadline = time.monotonic() + args.wait
    uids = []
    while not uids and time.monotonic() < deadline:
        found = [ln for ln in imap.cmd('UID SEARCH SUBJECT "%s"' % subject) if ln.startswith(b"* SEARCH")]
        uids = found[0].split()[2:] if found else []
        if not uids:
            time.sleep(0.2)
    if not uids:
        print("FAIL the message is not in INBOX on B within %.0f s" % args.wait)
        return 1
    lines = imap.cmd("UID FETCH %s (BODY.PEEK[])" % uids[-1].decode(), timeout=60)
    imap.close()
    raw = b""
    for ln in lines:
        m = re.match(rb"^\* \d+ FETCH .*?\{(\d+)\}\r\n", ln, re.S)
        if m:
            start = m.end()
            raw = ln[start:start + int(m.group(1))]
    got = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [p for p in got.iter_attachments() if p.get_filename() == "random.bin"]
    if not parts:
        print("FAIL no attachment random.bin in the %d bytes B served" % len(raw))
        return 1
    data = parts[0].get_content()
    if data != blob:
        print("FAIL the attachment B served has %d bytes, not the %d sent (or other bytes)"
              % (len(data), len(blob)))
        return 1
    print("ok the %d-byte attachment reads back whole on B" % len(blob))
    return 0


def sink(args):
    import asyncio

    import outbound_sink

    prefix = args.hold_rcpt.lower()
    hold = args.hold_seconds
    held = set()

    class HoldingSink(outbound_sink.Sink):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            a = address.lower()
            if self.local_part(a).startswith(prefix) and a not in held:
                held.add(a)
                print("hold rcpt %s" % address, flush=True)
                await asyncio.sleep(hold)
            elif args.delay_seconds:
                await asyncio.sleep(args.delay_seconds)
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    outbound_sink.Sink = HoldingSink
    args.reject_rcpt = []
    args.defer_rcpt = []
    args.tls_cert = None
    args.tls_key = None
    args.auth = None
    outbound_sink.serve(args)
    return 0


def submit(args):
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    done = 0
    with smtplib.SMTP("127.0.0.1", args.port, timeout=60) as s:
        s.ehlo("client.bridge.test")
        s.starttls(context=ctx)
        s.ehlo("client.bridge.test")
        s.login(args.user, args.password)
        for i, rcpt in enumerate(args.rcpt, 1):
            mid = "<%s-%d@%s>" % (args.message_id_prefix, i, args.domain)
            msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s %d\r\nMessage-ID: %s\r\nDate: %s\r\n"
                   "\r\nmessage %d of %d\r\n"
                   % (args.sender, rcpt, args.message_id_prefix, i, mid,
                      time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), i, len(args.rcpt)))
            try:
                s.sendmail(args.sender, [rcpt], msg.encode())
                done += 1
            except smtplib.SMTPException as e:
                print("# %s to %s refused: %s" % (mid, rcpt, e))
    print("submitted %d" % done)
    return 0 if done == len(args.rcpt) else 1


def ws_count(args):
    import asyncio
    import json

    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    async def read_head(reader):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        return head

    def report(payload, who):
        try:
            frame = json.loads(payload)
        except ValueError:
            print("# not JSON: %r" % payload[:200], flush=True)
            return
        t = frame.get("type")
        if t == "OK":
            print("OK %s accepted=%s reason=%s pid=%s"
                  % (frame.get("id"), str(frame.get("accepted")).lower(),
                     (frame.get("reason") or "").replace(" ", "_"), who), flush=True)
        elif t == "INVOICE":
            print("INVOICE %s pid=%s" % (frame.get("id"), who), flush=True)

    def pid_of(port):
        """The process holding the client end (127.0.0.1:PORT) of a connection (Linux
        /proc), or "?"."""
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for row in f:
                        cols = row.split()
                        if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] != "0":
                            inode = cols[9]
                            break
            except OSError:
                continue
            if inode:
                break
        if not inode:
            return "?"
        want = "socket:[%s]" % inode
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                for fd in os.listdir("/proc/%s/fd" % pid):
                    if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == want:
                        return pid
            except OSError:
                continue
        return "?"

    async def relay_frames(reader, writer, who):
        buf = b""
        message = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                buf += data
                while len(buf) >= 2:
                    fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
                    masked, n, at = buf[1] & 0x80, buf[1] & 0x7F, 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n, at = int.from_bytes(buf[2:4], "big"), 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n, at = int.from_bytes(buf[2:10], "big"), 10
                    key = b""
                    if masked:
                        key, at = buf[at:at + 4], at + 4
                    if len(buf) < at + n:
                        break
                    payload, buf = buf[at:at + n], buf[at + n:]
                    if masked:
                        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
                    if opcode in (0, 1):
                        message += payload
                        if fin:
                            report(message, who)
                            message = b""
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    active = set()

    async def handle(c_reader, c_writer):
        who = pid_of(c_writer.get_extra_info("peername")[1])
        if args.hold_file and os.path.exists(args.hold_file):
            # Held: nothing reaches the relay, no answer for up to 60 s.
            print("HOLD pid=%s" % who, flush=True)
            try:
                await asyncio.wait_for(c_reader.read(-1), 60)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            c_writer.close()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", args.to_port)
        except OSError:
            c_writer.close()
            return
        try:
            head = await read_head(c_reader)
            lines = [ln for ln in head.split(b"\r\n")
                     if not ln.lower().startswith(b"sec-websocket-extensions:")]
            s_writer.write(b"\r\n".join(lines))
            await s_writer.drain()
            c_writer.write(await read_head(s_reader))
            await c_writer.drain()
        except ConnectionError:
            c_writer.close()
            s_writer.close()
            return
        active.update((c_writer, s_writer))
        await asyncio.gather(pipe(c_reader, s_writer), relay_frames(s_reader, c_writer, who))
        active.discard(c_writer)
        active.discard(s_writer)

    async def watch_hold():
        # When the hold file appears, open connections are closed: the relay client keeps
        # one per relay, and its next one is then held.
        holding = False
        while True:
            now = bool(args.hold_file) and os.path.exists(args.hold_file)
            if now and not holding:
                for w in list(active):
                    try:
                        w.close()
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass
                print("holding from now on; closed %d connections" % len(active), flush=True)
                active.clear()
            holding = now
            await asyncio.sleep(0.05)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", args.port)
        print("proxy listening on %d" % args.port, flush=True)
        asyncio.get_running_loop().create_task(watch_hold())
        async with server:
            await server.serve_forever()

    asyncio.run(main())
    return 0


def ws_tally(args):
    def tally():
        oks = {}
        try:
            with open(args.log, encoding="utf-8") as f:
                for line in f:
                    m = re.match(r"^OK (\S+) accepted=(\w+) reason=(\S*)", line.strip())
                    if m and re.fullmatch(r"[0-9a-f]{64}", m.group(1)):
                        oks.setdefault(m.group(1), []).append((m.group(2) == "true", m.group(3)))
        except FileNotFoundError:
            pass
        return oks

    deadline = time.time() + args.wait
    while time.time() < deadline and sum(any(a for a, _ in v) for v in tally().values()) < args.expect:
        time.sleep(0.25)
    time.sleep(args.settle)
    oks = tally()
    bad = 0
    for mid, answers in sorted(oks.items()):
        good = len(answers) == 1 and answers[0][0]
        bad += not good
        print("%s %s: %s" % ("pass:" if good else "FAIL:", mid[:16],
                             ", ".join("accepted" if a else "refused " + r for a, r in answers)))
    once = sum(1 for v in oks.values() if len(v) == 1 and v[0][0])
    print("%d message ids published, %d accepted exactly once, %d published more than once"
          % (len(oks), once, sum(1 for v in oks.values() if len(v) > 1)))
    return 0 if bad == 0 and len(oks) == args.expect else 1


def imap_count(args):
    imap = Imap(args.port)
    imap.login(args.user, args.password)
    imap.cmd("SELECT INBOX")
    deadline = time.monotonic() + args.wait

    def subjects():
        out = []
        for ln in imap.cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"):
            m = re.search(rb"\r\nSubject:[ \t]*(.*?)\r\n", ln, re.I | re.S)
            if m:
                out.append(re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).decode(errors="replace").strip())
        return out

    while True:
        try:
            got = subjects()
        except RuntimeError:  # an empty mailbox: FETCH 1:* is an error
            got = []
        counts = {w: got.count(w) for w in args.subject}
        if min(counts.values()) >= 1 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
        imap.cmd("NOOP")
    imap.close()
    bad = 0
    for w, c in counts.items():
        bad += c != 1
        print("%s %s: %d" % ("pass:" if c == 1 else "FAIL:", w, c))
    print("%d subjects, %d exactly once, %d missing, %d more than once"
          % (len(counts), len(counts) - bad, sum(1 for c in counts.values() if c == 0),
             sum(1 for c in counts.values() if c > 1)))
    return 0 if bad == 0 else 1


def count(args):
    import outbound_sink

    want = args.expect
    ids = [outbound_sink.norm_id(m) for m in args.message_id]

    def counts():
        c = dict.fromkeys(ids, 0)
        for r in outbound_sink.load_records(args.dir):
            for v in r.header_raw("Message-ID"):
                v = outbound_sink.norm_id(v)
                if v in c:
                    c[v] += len(r.meta["rcpt_tos"])
        return c

    deadline = time.time() + args.wait
    while time.time() < deadline and min(counts().values()) < want:
        time.sleep(0.25)
    time.sleep(args.settle)
    c = counts()
    bad = 0
    for m in ids:
        good = c[m] == want
        bad += not good
        print("%s %s: %d" % ("pass:" if good else "FAIL:", m, c[m]))
    print("%d Message-IDs, %d with exactly %d cop%s, %d missing, %d duplicated"
          % (len(ids), len(ids) - bad, want, "y" if want == 1 else "ies",
             sum(1 for m in ids if c[m] < want), sum(1 for m in ids if c[m] > want)))
    return 0 if bad == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    # The IMAP/SMTP account every session-opening command logs in as.
    account = argparse.ArgumentParser(add_help=False)
    account.add_argument("--user", required=True)
    account.add_argument("--password", required=True)
    s = sub.add_parser("login", parents=[account])
    s.add_argument("--port", type=int, required=True)
    s = sub.add_parser("wake-on-mail", parents=[account])
    s.add_argument("--idle-port", type=int, required=True)
    s.add_argument("--mx-port", type=int, required=True)
    s.add_argument("--rcpt", required=True)
    s.add_argument("--limit", type=float, default=1.0)
    s.add_argument("--wait", type=float, default=10)
    s = sub.add_parser("wake-on-flag", parents=[account])
    s.add_argument("--idle-port", type=int, required=True)
    s.add_argument("--store-port", type=int, required=True)
    s.add_argument("--limit", type=float, default=1.0)
    s.add_argument("--wait", type=float, default=10)
    s = sub.add_parser("attachment", parents=[account])
    s.add_argument("--mx-port", type=int, required=True)
    s.add_argument("--imap-port", type=int, required=True)
    s.add_argument("--rcpt", required=True)
    s.add_argument("--size", type=int, default=200_000)
    s.add_argument("--wait", type=float, default=10)
    s = sub.add_parser("sink")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--hold-rcpt", required=True, metavar="PREFIX")
    s.add_argument("--hold-seconds", type=float, default=10)
    s.add_argument("--delay-seconds", type=float, default=0)
    s = sub.add_parser("submit", parents=[account])
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--from", dest="sender", required=True)
    s.add_argument("--rcpt", nargs="+", required=True)
    s.add_argument("--message-id-prefix", required=True)
    s.add_argument("--domain", default="bridge.test")
    s = sub.add_parser("ws-count")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--to-port", type=int, required=True)
    s.add_argument("--hold-file")
    s = sub.add_parser("ws-tally")
    s.add_argument("--log", required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--wait", type=float, default=60)
    s.add_argument("--settle", type=float, default=3)
    s = sub.add_parser("imap-count", parents=[account])
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--subject", nargs="+", required=True)
    s.add_argument("--wait", type=float, default=30)
    s = sub.add_parser("count")
    s.add_argument("--dir", required=True)
    s.add_argument("--message-id", nargs="+", required=True)
    s.add_argument("--expect", type=int, default=1)
    s.add_argument("--wait", type=float, default=60)
    s.add_argument("--settle", type=float, default=3)
    args = p.parse_args()
    return {"login": login, "wake-on-mail": wake_on_mail, "wake-on-flag": wake_on_flag,
            "attachment": attachment, "sink": sink, "submit": submit, "count": count, "ws-count": ws_count,
            "ws-tally": ws_tally, "imap-count": imap_count}[args.cmd](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
