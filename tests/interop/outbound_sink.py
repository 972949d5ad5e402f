#!/usr/bin/env python3
"""The receiving side of tests/interop/outbound_peers.sh: an MTA (aiosmtpd) that records
what the daemon sends, and the checks that read the records.

  outbound_sink.py serve --dir DIR [--port N] [--reject-rcpt PREFIX] [--defer-rcpt PREFIX]
                         [--tls-cert PEM --tls-key PEM] [--auth USER:PASSWORD]
      Listens on 127.0.0.1 (port 0: any free port) and prints "sink listening on
      127.0.0.1:PORT" once it accepts. Each accepted message becomes one JSON file in DIR
      (envelope, session facts, the raw bytes in base64), written whole (renamed into
      place). RCPT of a local part starting with a --reject-rcpt prefix gets
      "550 5.1.1", with a --defer-rcpt prefix "450 4.2.1". With --tls-cert/--tls-key it
      offers STARTTLS and requires it before MAIL; with --auth it also requires AUTH
      (PLAIN or LOGIN, only after STARTTLS) with that user and password.

  outbound_sink.py check --dir DIR [selection] [assertions]
      Waits (--wait, default 60 s) until a recorded message matches the selection
      (--rcpt, --subject, --message-id, all given must hold), or with --count N until N
      do and then --settle seconds more to see that no further one comes (--count 0: none
      arrives within --settle). Every assertion is checked on every match; prints one
      "pass:" or "FAIL:" line each and exits 0 only if all passed. DKIM is verified with
      dkimpy against the keys in --zone (the zone file the DNS stub serves), never the
      system's DNS.

  outbound_sink.py get --dir DIR [selection] --header NAME [--addr]
      Prints that header of the (first) matching message, unfolded; with --addr only
      the first address in it (addr-spec).

  outbound_sink.py imap --port N --user U --password P [--wait S] [--report-type T]
                        [--content-type T] [--regex RE]...
      Logs in over plaintext IMAP on loopback and waits until INBOX holds a message of
      that Content-Type (and report-type) whose report part (or, without one, the whole
      message) matches every --regex (multiline, case-insensitive).

  outbound_sink.py selftest
      Checks the checks: signs a message with fresh RSA and Ed25519 keys (dkimpy),
      sends it through a sink with dot-stuffed lines, and runs check on it, including
      a tampered copy that must fail.

Needs aiosmtpd, dkimpy and PyNaCl (dkimpy's Ed25519): tests/interop/requirements.txt.
"""

import argparse
import asyncio
import base64
import email
import email.policy
import email.utils
import imaplib
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time


# --- zone ------------------------------------------------------------------------------


def parse_zone(path):
    """The TXT records of a zone in src/testing/dns.rs's format: {name: [value, ...]}."""
    txt = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[1].upper() != "TXT":
                continue
            name = parts[0].lower().rstrip(".")
            rest = parts[2].strip()
            if rest.startswith('"'):
                value = ""
                for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', rest):
                    value += re.sub(r"\\(.)", r"\1", m.group(1))
            else:
                value = rest
            txt.setdefault(name, []).append(value)
    return txt


def zone_dnsfunc(path):
    txt = parse_zone(path)

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        values = txt.get(name.lower().rstrip("."), [])
        # dkimpy wants the one record's text; with several, the DKIM one.
        for v in values:
            if v.startswith("v=DKIM1") or len(values) == 1:
                return v.encode()
        return None

    return dnsfunc


# --- the sink --------------------------------------------------------------------------


class Sink:
    def __init__(self, args):
        self.dir = args.dir
        self.reject = args.reject_rcpt or []
        self.defer = args.defer_rcpt or []
        self.seq = 0

    @staticmethod
    def local_part(address):
        return address.rsplit("@", 1)[0].lower()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = self.local_part(address)
        if any(local.startswith(p.lower()) for p in self.reject):
            print("rcpt refused (550): %s" % address, flush=True)
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        if any(local.startswith(p.lower()) for p in self.defer):
            print("rcpt deferred (450): %s" % address, flush=True)
            return "450 4.2.1 <%s>: Recipient address deferred: try later" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seq += 1
        auth = None
        if session.authenticated and session.auth_data is not None:
            login = getattr(session.auth_data, "login", None)
            if isinstance(login, bytes):
                login = login.decode("utf-8", "replace")
            auth = login
        record = {
            "received_at": time.time(),
            "peer": "%s:%s" % tuple(session.peer[:2]) if session.peer else None,
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "auth": auth,
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "rcpt_tos": list(envelope.rcpt_tos),
            "rcpt_options": list(envelope.rcpt_options),
            "data": base64.b64encode(envelope.original_content).decode("ascii"),
        }
        name = "%d-%d-%04d.json" % (time.time_ns(), os.getpid(), self.seq)
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.rename(tmp, os.path.join(self.dir, name))
        print(
            "message %s: from <%s> to %s, %d bytes%s%s"
            % (
                name,
                envelope.mail_from,
                ",".join(envelope.rcpt_tos),
                len(envelope.original_content),
                ", TLS" if record["tls"] else "",
                ", AUTH " + auth if auth else "",
            ),
            flush=True,
        )
        return "250 2.0.0 Ok: queued as %s" % name


def serve(args):
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args)
    ctx = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    authenticator = None
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            good = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode()
                and auth_data.password == password.encode()
            )
            print("auth %s as %r: %s" % (mechanism, getattr(auth_data, "login", None),
                                         "ok" if good else "refused"), flush=True)
            return AuthResult(success=good, handled=False, auth_data=auth_data)

    def factory():
        kw = dict(hostname="sink.remote.test", decode_data=False, enable_SMTPUTF8=True)
        if ctx is not None:
            kw.update(tls_context=ctx, require_starttls=True)
        if authenticator is not None:
            kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
        return SMTP(handler, **kw)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, sock=sock)
        print("sink listening on 127.0.0.1:%d" % sock.getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# --- reading the records ---------------------------------------------------------------


class Record:
    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.meta = json.load(f)
        self.raw = base64.b64decode(self.meta["data"])
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.default)

    def header(self, name):
        """All values of a header, unfolded, encoded words decoded."""
        out = []
        for v in self.msg.get_all(name) or []:
            out.append(re.sub(r"\r?\n[ \t]", " ", str(v)).strip())
        return out

    def header_raw(self, name):
        out = []
        for k, v in self.msg.raw_items():
            if k.lower() == name.lower():
                out.append(re.sub(r"\r?\n[ \t]", " ", v).strip())
        return out

    def body(self):
        i = self.raw.find(b"\r\n\r\n")
        if i < 0:
            return b""
        return self.raw[i + 4:]

    def describe(self):
        m = self.meta
        return "%s: MAIL FROM <%s> RCPT %s, %d bytes, tls=%s auth=%s" % (
            os.path.basename(self.path), m["mail_from"], ",".join(m["rcpt_tos"]),
            len(self.raw), m["tls"], m["auth"])


def load_records(folder):
    out = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return out
    for n in names:
        if n.endswith(".json") and not n.startswith("."):
            out.append(Record(os.path.join(folder, n)))
    return out


def norm_id(s):
    s = s.strip()
    return s if s.startswith("<") else "<%s>" % s


def selected(args):
    out = []
    for r in load_records(args.dir):
        if args.rcpt and args.rcpt.lower() not in [a.lower() for a in r.meta["rcpt_tos"]]:
            continue
        if args.subject is not None and args.subject not in r.header("Subject"):
            continue
        if args.message_id and norm_id(args.message_id) not in [
                norm_id(v) for v in r.header_raw("Message-ID")]:
            continue
        out.append(r)
    return out


def wait_selected(args):
    deadline = time.time() + args.wait
    want = args.count
    while True:
        recs = selected(args)
        if want is None and recs:
            return recs
        if want is not None and want > 0 and len(recs) >= want:
            time.sleep(args.settle)
            return selected(args)
        if time.time() >= deadline:
            return recs
        if want == 0:
            time.sleep(args.settle)
            return selected(args)
        time.sleep(0.25)


def domain_of(addr):
    return addr.rsplit("@", 1)[1].lower() if addr and "@" in addr else ""


def from_address(rec):
    """(display name, addr-spec) of the single From address, or None."""
    try:
        h = rec.msg["From"]
        addrs = h.addresses if h is not None else ()
    except Exception:  # noqa: BLE001 - a bad From is reported as missing
        return None
    if len(addrs) != 1:
        return None
    return addrs[0].display_name, addrs[0].addr_spec


def dkim_results(rec, zone):
    """[(tags dict, verified bool, error text)] for each DKIM-Signature, in order."""
    import dkim

    dnsfunc = zone_dnsfunc(zone)
    sigs = rec.header_raw("DKIM-Signature")
    out = []
    for i, sig in enumerate(sigs):
        tags = {}
        for part in sig.split(";"):
            if "=" in part:
                k, _, v = part.partition("=")
                tags[k.strip()] = re.sub(r"\s+", "", v)
        d = dkim.DKIM(rec.raw)
        err = ""
        try:
            ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
        except Exception as e:  # noqa: BLE001 - any failure is a failed verification
            ok, err = False, "%s: %s" % (type(e).__name__, e)
        if not ok and not err:
            err = "signature does not verify"
        out.append((tags, ok, err))
    return out


def check_record(rec, args, say):
    good = True

    def t(cond, what):
        nonlocal good
        say(("pass: " if cond else "FAIL: ") + what)
        good = good and bool(cond)

    m = rec.meta
    if args.mail_from is not None:
        t((m["mail_from"] or "").lower() == args.mail_from.lower(),
          "envelope MAIL FROM is <%s> (got <%s>)" % (args.mail_from, m["mail_from"]))
    for a in args.has_rcpt or []:
        t(a.lower() in [r.lower() for r in m["rcpt_tos"]],
          "envelope recipients include <%s> (got %s)" % (a, m["rcpt_tos"]))
    fa = from_address(rec)
    if args.from_addr is not None:
        t(fa and fa[1].lower() == args.from_addr.lower(),
          "From address is %s (got %r)" % (args.from_addr, rec.header("From")))
    if args.from_domain is not None:
        t(fa and domain_of(fa[1]) == args.from_domain.lower(),
          "From address is @%s (got %r)" % (args.from_domain, rec.header("From")))
    for s in args.from_name_contains or []:
        t(fa and s.lower() in fa[0].lower(),
          "From display name contains %r (got %r)" % (s, fa[0] if fa else rec.header("From")))
    for spec in args.header or []:
        name, _, value = spec.partition("=")
        got = rec.header(name)
        t(value in got, "header %s: %s (got %r)" % (name, value, got))
    for spec in args.header_id or []:
        name, _, value = spec.partition("=")
        got = rec.header_raw(name)
        t(norm_id(value) in [norm_id(v) for v in got],
          "header %s names %s (got %r)" % (name, norm_id(value), got))
    for spec in args.header_re or []:
        name, _, rx = spec.partition("=")
        got = rec.header(name)
        t(len(got) == 1 and re.search(rx, got[0]),
          "one header %s matching /%s/ (got %r)" % (name, rx, got))
    for name in args.has_header or []:
        got = rec.header_raw(name)
        t(got, "has a %s header (got %r)" % (name, got))
    for name in args.no_header or []:
        got = rec.header_raw(name)
        t(not got, "no %s header (got %r)" % (name, got))
    if args.auth is not None:
        t(m["auth"] == args.auth, "the sender authenticated as %r (got %r)" % (args.auth, m["auth"]))
    if args.tls:
        t(m["tls"], "the session used TLS")
    if args.body_endswith is not None:
        with open(args.body_endswith, "rb") as f:
            want = f.read()
        body = rec.body()
        t(rec.raw.endswith(want) and body.endswith(want),
          "the message ends with exactly the submitted body (%d bytes; body is %s)"
          % (len(want), "identical" if body == want else "%d bytes: %r" % (len(body), body[-300:])))
    need_dkim = args.dkim or args.dkim_all_pass or args.aligned
    if need_dkim:
        if not args.zone:
            t(False, "DKIM checks need --zone")
            return False
        results = dkim_results(rec, args.zone)
        for tags, ok, err in results:
            say("  DKIM-Signature d=%s s=%s a=%s: %s" % (tags.get("d"), tags.get("s"),
                                                        tags.get("a"), "verifies" if ok else err))
        dom = (args.dkim_domain or (domain_of(fa[1]) if fa else "")).lower()
        for spec in args.dkim or []:
            sel, _, alg = spec.partition(":")
            hit = [ok for tags, ok, _ in results
                   if tags.get("d", "").lower() == dom and tags.get("s") == sel
                   and (not alg or tags.get("a") == alg)]
            t(hit and all(hit), "DKIM-Signature d=%s s=%s a=%s present and verifies"
              % (dom, sel, alg or "*"))
        if args.dkim_all_pass:
            t(results and all(ok for _, ok, _ in results),
              "every DKIM-Signature (%d) verifies" % len(results))
        if args.aligned:
            fdom = domain_of(fa[1]) if fa else ""
            t(fa is not None, "one From address (got %r)" % rec.header("From"))
            passing = [tags.get("d", "").lower() for tags, ok, _ in results if ok]
            t(fdom and fdom in passing,
              "DMARC DKIM alignment (strict): a verifying signature has d=%s (passing: %s)"
              % (fdom, passing))
            t(fdom and domain_of(m["mail_from"]) == fdom,
              "DMARC SPF alignment (strict): MAIL FROM domain equals the From domain %s (got <%s>)"
              % (fdom, m["mail_from"]))
    return good


def describe_selection(args):
    parts = []
    if args.rcpt:
        parts.append("RCPT %s" % args.rcpt)
    if args.subject is not None:
        parts.append("Subject %r" % args.subject)
    if args.message_id:
        parts.append("Message-ID %s" % norm_id(args.message_id))
    return ", ".join(parts) or "any message"


def check(args):
    recs = wait_selected(args)
    sel = describe_selection(args)
    good = True
    if args.count is None:
        if not recs:
            print("FAIL: a message with %s arrived (none within %ss; %d recorded in all)"
                  % (sel, args.wait, len(load_records(args.dir))))
            for r in load_records(args.dir):
                print("  recorded " + r.describe() + " Subject %r" % r.header("Subject"))
            return 1
        print("pass: a message with %s arrived" % sel)
    else:
        good = len(recs) == args.count
        print("%s: exactly %d message(s) with %s arrived (got %d)"
              % ("pass" if good else "FAIL", args.count, sel, len(recs)))
    for r in recs:
        print("# " + r.describe())
        if not check_record(r, args, lambda s: print("  " + s)):
            good = False
            print("  # its header:")
            head = r.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
            for line in head.split("\r\n"):
                print("  #   " + line[:300])
    return 0 if good else 1


def get(args):
    recs = wait_selected(args)
    if not recs:
        print("no message with %s" % describe_selection(args), file=sys.stderr)
        return 1
    rec = recs[0]
    if args.addr:
        h = rec.msg[args.header]
        if h is None or not getattr(h, "addresses", None):
            print("no address in %s: %r" % (args.header, rec.header(args.header)), file=sys.stderr)
            return 1
        print(h.addresses[0].addr_spec)
    else:
        vals = rec.header_raw(args.header)
        if not vals:
            print("no %s header" % args.header, file=sys.stderr)
            return 1
        print(vals[0])
    return 0


# --- IMAP ------------------------------------------------------------------------------


def imap_find(args):
    deadline = time.time() + args.wait
    last = "no connection"
    while True:
        try:
            found, last = imap_scan(args)
            if found:
                for line in found:
                    print(line)
                return 0
        except (imaplib.IMAP4.error, OSError) as e:
            last = "IMAP error: %s" % e
        if time.time() >= deadline:
            break
        time.sleep(1)
    print("FAIL: no message in %s's INBOX is %s with report-type=%s matching %r within %ss"
          % (args.user, args.content_type, args.report_type, args.regex, args.wait))
    print(last)
    return 1


def imap_scan(args):
    m = imaplib.IMAP4("127.0.0.1", args.port, timeout=30)
    try:
        m.login(args.user, args.password)
        typ, data = m.select("INBOX", readonly=True)
        if typ != "OK":
            return [], "SELECT INBOX: %r" % data
        typ, data = m.uid("SEARCH", None, "ALL")
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        seen = []
        for uid in uids:
            typ, fetched = m.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = b""
            for item in fetched or []:
                if isinstance(item, tuple):
                    raw = item[1]
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            ctype = msg.get_content_type()
            rtype = msg.get_param("report-type")
            seen.append("  uid %s: %s report-type=%s Subject %r"
                        % (uid.decode(), ctype, rtype, str(msg.get("Subject", ""))))
            if ctype != args.content_type.lower():
                continue
            if args.report_type and (rtype or "").lower() != args.report_type.lower():
                continue
            target = raw
            if args.report_type == "delivery-status":
                parts = [p for p in msg.walk()
                         if p.get_content_type() in ("message/delivery-status",
                                                      "message/global-delivery-status")]
                if not parts:
                    seen[-1] += " (no message/delivery-status part)"
                    continue
                target = b"".join(p.as_bytes() for p in parts)
            text = target.decode("utf-8", "replace")
            missing = [rx for rx in args.regex or [] if not re.search(rx, text, re.M | re.I)]
            if missing:
                seen[-1] += " (no match for %r)" % missing
                continue
            return ["pass: uid %s in %s's INBOX is %s; report-type=%s and matches %r"
                    % (uid.decode(), args.user, ctype, rtype, args.regex)], ""
        return [], "INBOX holds %d message(s):\n%s" % (len(uids), "\n".join(seen))
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass


# --- self-test -------------------------------------------------------------------------


def selftest(args):
    import smtplib
    import subprocess

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    results = []

    def t(cond, what):
        results.append(bool(cond))
        print(("ok - " if cond else "not ok - ") + "selftest: " + what, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ed_key = ed25519.Ed25519PrivateKey.generate()
        rsa_pem = rsa_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
        ed_raw = ed_key.private_bytes(serialization.Encoding.Raw,
                                      serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        rsa_pub = base64.b64encode(rsa_key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        ed_pub = base64.b64encode(ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
        zone = os.path.join(tmp, "zone")
        chunks = " ".join('"%s"' % rsa_pub[i:i + 200] for i in range(0, len(rsa_pub), 200))
        with open(zone, "w") as f:
            f.write('s1r._domainkey.self.test. TXT "v=DKIM1; k=rsa; h=sha256; p=" %s\n' % chunks)
            f.write('s1e._domainkey.self.test TXT "v=DKIM1; k=ed25519; p=%s"\n' % ed_pub)
        body = b"first\r\n.one dot\r\n..two dots\r\n.\r\nlast\r\n"
        with open(os.path.join(tmp, "body"), "wb") as f:
            f.write(body)
        msg = (b"From: Self <me@self.test>\r\nTo: you@remote.test\r\nSubject: self test\r\n"
               b"Message-ID: <self-1@self.test>\r\n\r\n" + body)
        hdrs = [b"from", b"to", b"subject", b"message-id"]
        sig_r = dkim.sign(msg, b"s1r", b"self.test", rsa_pem, include_headers=hdrs)
        sig_e = dkim.sign(msg, b"s1e", b"self.test", base64.b64encode(ed_raw),
                          signature_algorithm=b"ed25519-sha256", include_headers=hdrs)
        signed = sig_e + sig_r + msg

        store = os.path.join(tmp, "sink")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", "--dir", store,
                                 "--reject-rcpt", "nobody"], stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.ehlo("self.test")
                refused = s.sendmail("me@self.test", ["you@remote.test", "nobody2@remote.test"],
                                     signed)
            t(refused.get("nobody2@remote.test", (0,))[0] == 550,
              "the sink refuses nobody2@remote.test with 550 (got %r)" % refused)
        finally:
            proc.terminate()
            proc.wait()

        base = ["--dir", store, "--zone", zone, "--wait", "5"]
        good = base + ["--rcpt", "you@remote.test", "--message-id", "self-1@self.test",
                       "--mail-from", "me@self.test", "--dkim", "s1r:rsa-sha256",
                       "--dkim", "s1e:ed25519-sha256", "--dkim-all-pass", "--aligned",
                       "--body-endswith", os.path.join(tmp, "body"), "--no-header", "Bcc",
                       "--from-name-contains", "Self", "--count", "1", "--settle", "0"]
        t(run_check(good) == 0, "a message signed with RSA and Ed25519 verifies, body intact")

        # The same message with its body changed: both signatures must fail.
        rec_path = load_records(store)[0].path
        with open(rec_path) as f:
            meta = json.load(f)
        meta["data"] = base64.b64encode(signed.replace(b"last", b"lost")).decode()
        with open(os.path.join(store, "z-tampered.json"), "w") as f:
            json.dump(meta, f)
        os.remove(rec_path)
        t(run_check(good) == 1, "a tampered copy fails")
    return 0 if all(results) else 1


def run_check(argv):
    args = parser().parse_args(["check"] + argv)
    return check(args)


# --- command line ----------------------------------------------------------------------


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--reject-rcpt", action="append", metavar="PREFIX")
    s.add_argument("--defer-rcpt", action="append", metavar="PREFIX")
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--auth", metavar="USER:PASSWORD")

    def selection(c):
        c.add_argument("--dir", required=True)
        c.add_argument("--rcpt")
        c.add_argument("--subject")
        c.add_argument("--message-id")
        c.add_argument("--wait", type=float, default=60)
        c.add_argument("--count", type=int)
        c.add_argument("--settle", type=float, default=2)

    c = sub.add_parser("check")
    selection(c)
    c.add_argument("--zone")
    c.add_argument("--mail-from")
    c.add_argument("--has-rcpt", action="append", metavar="ADDR")
    c.add_argument("--from-addr")
    c.add_argument("--from-domain")
    c.add_argument("--from-name-contains", action="append")
    c.add_argument("--header", action="append", metavar="NAME=VALUE")
    c.add_argument("--header-id", action="append", metavar="NAME=MSGID")
    c.add_argument("--header-re", action="append", metavar="NAME=REGEX")
    c.add_argument("--has-header", action="append", metavar="NAME")
    c.add_argument("--no-header", action="append", metavar="NAME")
    c.add_argument("--auth")
    c.add_argument("--tls", action="store_true")
    c.add_argument("--body-endswith", metavar="FILE")
    c.add_argument("--dkim", action="append", metavar="SELECTOR:ALGORITHM")
    c.add_argument("--dkim-domain")
    c.add_argument("--dkim-all-pass", action="store_true")
    c.add_argument("--aligned", action="store_true")

    g = sub.add_parser("get")
    selection(g)
    g.add_argument("--header", required=True)
    g.add_argument("--addr", action="store_true")

    i = sub.add_parser("imap")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--user", required=True)
    i.add_argument("--password", required=True)
    i.add_argument("--wait", type=float, default=60)
    i.add_argument("--content-type", default="multipart/report")
    i.add_argument("--report-type", default="delivery-status")
    i.add_argument("--regex", action="append")

    sub.add_parser("selftest")
    return p


def main():
    args = parser().parse_args()
    if args.cmd == "serve":
        serve(args)
        return 0
    return {"check": check, "get": get, "imap": imap_find, "selftest": selftest}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
