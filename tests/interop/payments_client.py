#!/usr/bin/env python3
"""The peers' side of tests/interop/payments_peers.sh: the pay page's JSON, a user's
folders over IMAP, a browser on the pay page, LNbits as a payer's wallet, and the
payment requests the aiosmtpd sink (outbound_sink.py) received.

  payments_client.py status --base URL --token T [--want-state S] [--wait SEC]
                            [--expect KEY=VALUE]... [--print KEY]
      GET <base>/pay/<token>/status (HTTPS, the certificate not verified); waits until
      "state" is --want-state (polling every 0.25 s). Prints the JSON, or with --print
      only that field. Every --expect must hold (compared as text). Exit 0 only if all held.

  payments_client.py imap-check --port N --user U --password P --folder F
                                (--message-id ID | --subject S) [--count N] [--wait SEC]
                                [--settle SEC] [--flag F]... [--no-flag F]...
                                [--header NAME=VALUE]... [--has-header NAME]...
      Plaintext IMAP on loopback (imaplib), the folder EXAMINEd read-only. Waits until
      the folder holds --count messages (default 1) with that Message-ID (or that exact
      Subject: native LNMP mail is shown with a Message-ID of its own), then --settle
      seconds more to see that no further copy comes (with --count 0: that none is there
      after --settle). Prints one "pass:" or "FAIL:" line per assertion, on every match.

  payments_client.py imap-find --port N --user U --password P --folder F --subject S
                               --pattern REGEX [--wait SEC]
      Waits until the folder holds a message with that exact Subject and prints the first
      match of REGEX in its whole text (header and body, as stored); exit 1 if there is
      no such message or no match. What it saw goes to stderr.

  payments_client.py http --method M --url URL [--want-status CODE]
                          [--contains TEXT]... [--absent TEXT]...
      One request (HTTPS, the certificate not verified; POST without a body); prints the
      status and the text of the answer without its tags. --want-status is a code (200)
      or a class (4xx). Exit 0 only if every expectation held.

  payments_client.py imap-move --port N --user U --password P --folder F --to F2
                               --message-id ID
      UID MOVE of the message with that Message-ID from F to F2; prints the server's words.

  payments_client.py browser --url URL --amount N --recipient ADDR --shot-held PNG
                             --shot-delivered PNG --pay-command CMD [--host-map NAME]
                             [--bolt11 B] [--wait SEC]
      Headless Chromium (Debian's chromium, /usr/bin/chromedriver) through Selenium: opens
      the pay page, checks that it shows the amount, the recipient and an SVG QR code and
      that #status has data-state=held, saves a screenshot (and, with --bolt11 and
      zbarimg from Debian's zbar-tools, reads the QR code back from it), runs CMD (a shell command
      that pays the invoice), then waits, without reloading, until
      #status[data-state=delivered], and saves a second screenshot. --host-map NAME
      resolves NAME to 127.0.0.1 inside the browser (the pay link's host name).

  payments_client.py lnbits-setup --url URL --out FILE
      Claims the super user of a fresh LNbits (first install), creates wallet A (the
      bridge's) and wallet B (the payer's), funds B with 100000 sats, and writes shell
      assignments (lnbits_a_id, lnbits_a_inkey, lnbits_a_adminkey, lnbits_b_...) to FILE.
  payments_client.py lnbits-wallet --url URL --name NAME --prefix P --out FILE
      One more empty wallet; appends P_id, P_inkey and P_adminkey assignments to FILE.
  payments_client.py lnbits-pay --url URL --key ADMINKEY --bolt11 B
  payments_client.py lnbits-invoice --url URL --key INKEY --bolt11 B [--amount-msat N]
                                   [--wallet ID]
      The invoice is one of that wallet's, unpaid (of N msat; in wallet ID).
  payments_client.py lnbits-balance --url URL --key KEY         (prints msat)

  payments_client.py request-check --dir SINKDIR --rcpt ADDR [--count N] [--wait SEC]
                                   [--settle SEC] [--contains TEXT]... [--absent TEXT]...
                                   [--line TEXT]... [--header NAME=VALUE]...
      The payment requests (emails) the sink got for ADDR: waits for --count of them
      (default 1; 0: none within --settle), then checks each: the null envelope sender,
      every --header, every --contains somewhere in the message, every --line as a whole
      body line, no --absent text anywhere (headers and body, case-insensitive).

Needs only the standard library, except `browser` (selenium) and `request-check`
(outbound_sink.py beside this file).
"""

import argparse
import email
import email.policy
import imaplib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

imaplib.Commands["MOVE"] = ("SELECTED",)

_unverified = ssl.create_default_context()
_unverified.check_hostname = False
_unverified.verify_mode = ssl.CERT_NONE


class Checks:
    def __init__(self):
        self.failed = 0

    def __call__(self, good, what):
        print("%s %s" % ("pass:" if good else "FAIL:", what), flush=True)
        if not good:
            self.failed += 1
        return good


def http(method, url, body=None, headers=None, timeout=15):
    """(status, parsed JSON or text) of one request; HTTP errors are answers too."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    ctx = _unverified if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


# --- the pay page's JSON ---------------------------------------------------------------


def cmd_status(a):
    url = "%s/pay/%s/status" % (a.base.rstrip("/"), a.token)
    deadline = time.time() + a.wait
    last = None
    while True:
        try:
            status, body = http("GET", url)
            last = (status, body)
        except OSError as e:
            last = (None, "request failed: %s" % e)
        state = last[1].get("state") if isinstance(last[1], dict) else None
        if a.want_state is None or state == a.want_state or time.time() >= deadline:
            break
        time.sleep(0.25)
    status, body = last
    print("# GET %s -> %s %s" % (url, status, json.dumps(body) if isinstance(body, dict) else body),
          file=sys.stderr)
    if status != 200 or not isinstance(body, dict):
        print("FAIL: %s answered %s, not 200 with JSON" % (url, status), file=sys.stderr)
        return 1
    good = True
    if a.want_state is not None and body.get("state") != a.want_state:
        print("FAIL: state is %r after %ss, not %r" % (body.get("state"), a.wait, a.want_state),
              file=sys.stderr)
        good = False
    for e in a.expect or []:
        k, _, v = e.partition("=")
        if str(body.get(k)) != v:
            print("FAIL: %s is %r, not %r" % (k, body.get(k), v), file=sys.stderr)
            good = False
    if a.print:
        print(body.get(a.print, ""))
    else:
        print(json.dumps(body))
    return 0 if good else 1


# --- IMAP ------------------------------------------------------------------------------


def imap_login(a):
    m = imaplib.IMAP4("127.0.0.1", a.port, timeout=30)
    m.login(a.user, a.password)
    return m


def imap_messages(m, folder):
    """[(uid, flags list, parsed headers)] of every message in the folder."""
    typ, data = m.select('"%s"' % folder, readonly=True)
    if typ != "OK":
        raise RuntimeError("EXAMINE %s: %s %s" % (folder, typ, data))
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER])")
    if typ != "OK":
        raise RuntimeError("UID FETCH: %s %s" % (typ, data))
    out = []
    pending = None

    def finish():
        if pending is None:
            return
        uid = re.search(rb"\bUID (\d+)", pending[0])
        flags = re.search(rb"\bFLAGS \(([^)]*)\)", pending[0])
        out.append((
            int(uid.group(1)) if uid else None,
            flags.group(1).decode().split() if flags else [],
            email.message_from_bytes(pending[1], policy=email.policy.default),
        ))

    for item in data or []:
        if item is None:
            continue
        if isinstance(item, tuple):
            finish()
            pending = [item[0], item[1]]
        elif pending is not None:
            # what follows the literal (FLAGS may come after the header)
            pending[0] = pending[0] + b" " + item
    finish()
    return out


def norm_id(s):
    s = (s or "").strip()
    return s if s.startswith("<") else "<%s>" % s


def with_id(msgs, mid):
    return [x for x in msgs if norm_id(str(x[2].get("Message-ID", ""))) == norm_id(mid)]


def with_subject(msgs, subject):
    return [x for x in msgs if str(x[2].get("Subject", "")).strip() == subject]


def selected(a, msgs):
    """The messages the arguments name: by --message-id, else by --subject."""
    if a.message_id:
        return with_id(msgs, a.message_id)
    return with_subject(msgs, a.subject)


def named(a):
    return ("Message-ID %s" % a.message_id) if a.message_id else ("Subject %r" % a.subject)


def describe(msgs):
    return "; ".join("uid %s flags %s" % (u, " ".join(f) or "-") for u, f, _ in msgs) or "none"


def cmd_imap_check(a):
    check = Checks()
    m = imap_login(a)
    try:
        deadline = time.time() + a.wait
        while True:
            found = selected(a, imap_messages(m, a.folder))
            if a.count == 0 or len(found) >= a.count or time.time() >= deadline:
                break
            time.sleep(0.25)
        if a.settle:
            time.sleep(a.settle)
            found = selected(a, imap_messages(m, a.folder))
        check(len(found) == a.count, "%s of %s holds %d message(s) with %s (found %d: %s)"
              % (a.folder, a.user, a.count, named(a), len(found), describe(found)))
        for uid, flags, hdr in found:
            for f in a.flag or []:
                check(f in flags, "uid %s has flag %s (flags: %s)" % (uid, f, " ".join(flags)))
            for f in a.no_flag or []:
                check(f not in flags, "uid %s lacks flag %s (flags: %s)" % (uid, f, " ".join(flags)))
            for h in a.header or []:
                name, _, value = h.partition("=")
                got = [str(v).strip() for v in hdr.get_all(name) or []]
                check(got == [value], "uid %s: %s: %s (got %s)" % (uid, name, value, got))
            for name in a.has_header or []:
                got = [str(v).strip() for v in hdr.get_all(name) or []]
                check(bool(got), "uid %s has a %s field (got %s)" % (uid, name, got))
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001 - the checks are what count
            pass
    return 1 if check.failed else 0


def cmd_imap_find(a):
    m = imap_login(a)
    try:
        deadline = time.time() + a.wait
        while True:
            found = with_subject(imap_messages(m, a.folder), a.subject)
            if found or time.time() >= deadline:
                break
            time.sleep(0.25)
        print("# %s of %s: %d message(s) with Subject %r (%s)"
              % (a.folder, a.user, len(found), a.subject, describe(found)), file=sys.stderr)
        if not found:
            return 1
        _, data = m.uid("FETCH", str(found[0][0]), "(BODY.PEEK[])")
        raw = b"".join(x[1] for x in data or [] if isinstance(x, tuple))
        text = raw.decode("utf-8", "replace")
        for line in text.splitlines()[:40]:
            print("#   " + line, file=sys.stderr)
        hit = re.search(a.pattern, text)
        if not hit:
            print("# no match of /%s/ in uid %s" % (a.pattern, found[0][0]), file=sys.stderr)
            return 1
        print(hit.group(0))
        return 0
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass


def cmd_http(a):
    status, body = http(a.method, a.url)
    text = body if isinstance(body, str) else json.dumps(body)
    # What a reader sees: the text without scripts, styles and tags.
    words = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", text)
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", words)).strip()
    print("%s %s -> %s: %s" % (a.method, a.url, status, words[:600]))
    good = True
    if a.want_status:
        want = a.want_status.lower()
        if want.endswith("xx"):
            fits = str(status).startswith(want[0])
        else:
            fits = str(status) == want
        if not fits:
            print("FAIL: status %s, not %s" % (status, a.want_status))
            good = False
    for t in a.contains or []:
        if t not in words and t not in text:
            print("FAIL: the answer lacks %r" % t)
            good = False
    for t in a.absent or []:
        if t in words or t in text:
            print("FAIL: the answer has %r" % t)
            good = False
    return 0 if good else 1


def cmd_imap_move(a):
    m = imap_login(a)
    try:
        found = with_id(imap_messages(m, a.folder), a.message_id)
        typ, data = m.select('"%s"' % a.folder)
        print("SELECT %s: %s %s" % (a.folder, typ, data))
        if len(found) != 1:
            print("FAIL: %d messages with Message-ID %s in %s" % (len(found), a.message_id, a.folder))
            return 1
        uid = str(found[0][0])
        typ, data = m.uid("MOVE", uid, '"%s"' % a.to)
        print("UID MOVE %s %s: %s %s" % (uid, a.to, typ, data))
        if getattr(m, "untagged_responses", None):
            print("untagged: %s" % {k: v for k, v in m.untagged_responses.items()})
        return 0 if typ == "OK" else 1
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass


# --- the browser -----------------------------------------------------------------------


def cmd_browser(a):
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    check = Checks()
    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors",
                "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,1200",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--disable-extensions"):
        opts.add_argument(arg)
    if a.host_map:
        opts.add_argument("--host-resolver-rules=MAP %s 127.0.0.1" % a.host_map)
    service = Service(executable_path=a.chromedriver, log_output=a.driver_log or subprocess.DEVNULL)
    try:
        driver = webdriver.Chrome(service=service, options=opts)
    except WebDriverException as e:
        print("FAIL: cannot start Chromium through %s: %s" % (a.chromedriver, e.msg))
        return 1
    try:
        driver.set_page_load_timeout(30)
        print("# browser: %s %s" % (driver.capabilities.get("browserName"),
                                    driver.capabilities.get("browserVersion")))
        driver.get(a.url)
        try:
            WebDriverWait(driver, 10).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#status"))
        except TimeoutException:
            pass
        text = driver.find_element(By.TAG_NAME, "body").text
        check(driver.title != "" or text != "", "the page at %s loaded (title %r)" % (a.url, driver.title))
        amount = re.search(r"(?<![0-9])%d(?![0-9])[\s\u00a0]*(sats?|sat)\b" % a.amount, text)
        check(amount is not None, "the page shows the amount (%d sats)" % a.amount)
        check(a.recipient in text, "the page names the recipient %s" % a.recipient)
        svgs = driver.find_elements(By.CSS_SELECTOR, "svg")
        qr = [s for s in svgs if s.size.get("width", 0) >= 100 and s.size.get("height", 0) >= 100]
        shapes = 0
        if qr:
            shapes = len(qr[0].find_elements(By.CSS_SELECTOR, "rect, path, use, polygon"))
        check(bool(qr) and shapes >= 1,
              "the page has an SVG QR code (%d svg element(s), the largest %s, %d shape(s))"
              % (len(svgs), max((s.size for s in svgs), key=lambda z: z["width"] * z["height"],
                                default={}), shapes))
        if a.bolt11:
            check(a.bolt11.lower() in driver.page_source.lower(), "the page carries the BOLT11 invoice")
        else:
            bolt11 = re.search(r"\bln(bc|tb|bcrt|tbs)[0-9a-z]{20,}", driver.page_source)
            check(bolt11 is not None, "the page carries a BOLT11 invoice")
        status = driver.find_elements(By.CSS_SELECTOR, "#status")
        state = status[0].get_attribute("data-state") if status else None
        check(state == "held", "#status has data-state=held (got %r)" % state)
        driver.save_screenshot(a.shot_held)
        check(os.path.getsize(a.shot_held) > 1000, "screenshot %s saved" % a.shot_held)
        zbar = shutil.which("zbarimg")
        if zbar and a.bolt11:
            r = subprocess.run([zbar, "-q", "--raw", a.shot_held], capture_output=True, text=True,
                               timeout=30)
            codes = [c.strip() for c in r.stdout.splitlines() if c.strip()]
            want = "lightning:" + a.bolt11.lower()
            check([c.lower() for c in codes] in ([want], [a.bolt11.lower()]),
                  "the QR code on the screenshot reads lightning:<the BOLT11> (zbarimg: %s)"
                  % ([c[:40] + "..." for c in codes] or "no code found"))
        elif a.bolt11:
            print("# zbarimg (Debian: zbar-tools) not found: the QR code is not read back")
        url_before = driver.current_url
        nav = driver.execute_script("return performance.getEntriesByType('navigation').length")
        marker = driver.execute_script("window.__lnmpNoReload = 1; return window.__lnmpNoReload")

        print("# paying: %s" % a.pay_command, flush=True)
        r = subprocess.run(a.pay_command, shell=True, capture_output=True, text=True, timeout=60)
        print("# %s -> exit %s: %s %s" % (shlex.split(a.pay_command)[0], r.returncode,
                                          r.stdout.strip(), r.stderr.strip()), flush=True)
        check(r.returncode == 0, "the pay command succeeded")
        t0 = time.time()
        try:
            WebDriverWait(driver, a.wait, poll_frequency=0.25).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, '#status[data-state="delivered"]'))
            check(True, "#status turned to data-state=delivered by itself after %.1f s" % (time.time() - t0))
        except TimeoutException:
            status = driver.find_elements(By.CSS_SELECTOR, "#status")
            state = status[0].get_attribute("data-state") if status else None
            check(False, "#status turned to data-state=delivered within %s s (still %r)" % (a.wait, state))
        same = driver.execute_script("return window.__lnmpNoReload") == marker
        check(same and driver.current_url == url_before,
              "without a reload (same document: %s, %s navigation entries)" % (same, nav))
        driver.save_screenshot(a.shot_delivered)
        check(os.path.getsize(a.shot_delivered) > 1000, "screenshot %s saved" % a.shot_delivered)
        logs = []
        try:
            logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        except Exception:  # noqa: BLE001 - not every driver keeps the console
            pass
        for e in logs[:10]:
            print("# console: %s" % e.get("message"))
    finally:
        driver.quit()
    return 1 if check.failed else 0


# --- LNbits ----------------------------------------------------------------------------


def lnbits_ok(what, status, body, want=(200, 201)):
    if status not in want:
        raise SystemExit("LNbits %s: HTTP %s %s" % (what, status, body))
    return body


def cmd_lnbits_setup(a):
    base = a.url.rstrip("/")
    pw = "secret-%d" % os.getpid()
    s, body = http("PUT", base + "/api/v1/auth/first_install",
                   {"username": "admin", "password": pw, "password_repeat": pw})
    token = lnbits_ok("first_install", s, body)["access_token"]
    wallets = {}
    for w in ("a", "b"):
        s, body = http("POST", base + "/api/v1/account", {"name": "wallet-%s" % w.upper()})
        wallets[w] = lnbits_ok("create wallet %s" % w, s, body)
    s, body = http("PUT", base + "/users/api/v1/balance",
                   {"id": wallets["b"]["id"], "amount": a.fund},
                   headers={"Authorization": "Bearer " + token})
    lnbits_ok("fund wallet B", s, body)
    with open(a.out, "w", encoding="utf-8") as f:
        for w, d in wallets.items():
            for k in ("id", "inkey", "adminkey"):
                f.write("lnbits_%s_%s=%s\n" % (w, k, shlex.quote(d[k])))
    for w in ("a", "b"):
        s, body = http("GET", base + "/api/v1/wallet", headers={"X-Api-Key": wallets[w]["inkey"]})
        print("wallet %s: %s, balance %s msat" % (w.upper(), wallets[w]["id"],
                                                  body.get("balance") if isinstance(body, dict) else body))
    return 0


def cmd_lnbits_wallet(a):
    s, body = http("POST", a.url.rstrip("/") + "/api/v1/account", {"name": a.name})
    w = lnbits_ok("create wallet %s" % a.name, s, body)
    with open(a.out, "a", encoding="utf-8") as f:
        for k in ("id", "inkey", "adminkey"):
            f.write("%s_%s=%s\n" % (a.prefix, k, shlex.quote(w[k])))
    print("wallet %s: %s" % (a.name, w["id"]))
    return 0


def cmd_lnbits_pay(a):
    s, body = http("POST", a.url.rstrip("/") + "/api/v1/payments",
                   {"out": True, "bolt11": a.bolt11}, headers={"X-Api-Key": a.key}, timeout=60)
    print("POST /api/v1/payments (out) -> %s %s" % (s, json.dumps(body) if isinstance(body, dict) else body))
    good = s in (200, 201) and isinstance(body, dict) and body.get("status", "success") == "success"
    return 0 if good else 1


def cmd_lnbits_invoice(a):
    base = a.url.rstrip("/")
    s, body = http("POST", base + "/api/v1/payments/decode", {"data": a.bolt11})
    print("POST /api/v1/payments/decode -> %s %s" % (s, body))
    if s != 200 or not isinstance(body, dict) or "payment_hash" not in body:
        return 1
    s, pay = http("GET", base + "/api/v1/payments/" + body["payment_hash"], headers={"X-Api-Key": a.key})
    print("GET /api/v1/payments/%s -> %s %s" % (body["payment_hash"], s, pay))
    good = s == 200 and isinstance(pay, dict) and pay.get("paid") is False
    detail = pay.get("details", {}) if isinstance(pay, dict) else {}
    if a.amount_msat is not None:
        good = good and body.get("amount_msat") == a.amount_msat
    if isinstance(detail, dict) and detail.get("wallet_id") is not None and a.wallet:
        good = good and detail["wallet_id"] == a.wallet
    return 0 if good else 1


def cmd_lnbits_balance(a):
    s, body = http("GET", a.url.rstrip("/") + "/api/v1/wallet", headers={"X-Api-Key": a.key})
    lnbits_ok("wallet", s, body, want=(200,))
    print(body["balance"])
    return 0


# --- the payment requests in the sink --------------------------------------------------


def cmd_request_check(a):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from outbound_sink import load_records

    check = Checks()

    def sel():
        return [r for r in load_records(a.dir)
                if a.rcpt.lower() in [x.lower() for x in r.meta["rcpt_tos"]]]

    deadline = time.time() + a.wait
    recs = sel()
    while a.count > 0 and len(recs) < a.count and time.time() < deadline:
        time.sleep(0.25)
        recs = sel()
    time.sleep(a.settle)
    recs = sel()
    check(len(recs) == a.count, "the sink got %d message(s) for %s (got %d%s)"
          % (a.count, a.rcpt, len(recs), "".join("; " + r.describe() for r in recs)))
    for r in recs:
        name = os.path.basename(r.path)
        raw = r.raw.decode("utf-8", "replace")
        lines = raw.replace("\r\n", "\n").split("\n")
        check(r.meta["mail_from"] in ("", "<>"),
              "%s: from the null envelope sender (MAIL FROM <%s>)" % (name, r.meta["mail_from"]))
        for h in a.header or []:
            k, _, v = h.partition("=")
            got = r.header(k)
            check(got == [v], "%s: %s: %s (got %s)" % (name, k, v, got))
        for t in a.contains or []:
            check(t in raw, "%s: has %r" % (name, t))
        for t in a.line or []:
            check(t in lines, "%s: has the line %r" % (name, t))
        for t in a.absent or []:
            check(t.lower() not in raw.lower(), "%s: does not have %r" % (name, t))
    if recs and a.show:
        print("# --- %s" % os.path.basename(recs[0].path))
        for line in recs[0].raw.decode("utf-8", "replace").splitlines()[:60]:
            print("#   " + line)
    return 1 if check.failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("status")
    s.add_argument("--base", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--want-state")
    s.add_argument("--wait", type=float, default=0)
    s.add_argument("--expect", action="append")
    s.add_argument("--print")

    def imap_args(x):
        x.add_argument("--port", type=int, required=True)
        x.add_argument("--user", required=True)
        x.add_argument("--password", required=True)
        x.add_argument("--folder", required=True)

    c = sub.add_parser("imap-check")
    imap_args(c)
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--message-id")
    which.add_argument("--subject")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--wait", type=float, default=10)
    c.add_argument("--settle", type=float, default=0)
    c.add_argument("--flag", action="append")
    c.add_argument("--no-flag", action="append")
    c.add_argument("--header", action="append")
    c.add_argument("--has-header", action="append")

    fd = sub.add_parser("imap-find")
    imap_args(fd)
    fd.add_argument("--subject", required=True)
    fd.add_argument("--pattern", required=True)
    fd.add_argument("--wait", type=float, default=10)

    h = sub.add_parser("http")
    h.add_argument("--method", default="GET")
    h.add_argument("--url", required=True)
    h.add_argument("--want-status")
    h.add_argument("--contains", action="append")
    h.add_argument("--absent", action="append")

    mv = sub.add_parser("imap-move")
    imap_args(mv)
    mv.add_argument("--message-id", required=True)
    mv.add_argument("--to", required=True)

    b = sub.add_parser("browser")
    b.add_argument("--url", required=True)
    b.add_argument("--amount", type=int, required=True)
    b.add_argument("--recipient", required=True)
    b.add_argument("--shot-held", required=True)
    b.add_argument("--shot-delivered", required=True)
    b.add_argument("--pay-command", required=True)
    b.add_argument("--host-map")
    b.add_argument("--bolt11")
    b.add_argument("--wait", type=float, default=20)
    b.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    b.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    b.add_argument("--driver-log")

    ls = sub.add_parser("lnbits-setup")
    ls.add_argument("--url", required=True)
    ls.add_argument("--out", required=True)
    ls.add_argument("--fund", type=int, default=100000)
    lw = sub.add_parser("lnbits-wallet")
    lw.add_argument("--url", required=True)
    lw.add_argument("--name", required=True)
    lw.add_argument("--prefix", required=True)
    lw.add_argument("--out", required=True)
    lp = sub.add_parser("lnbits-pay")
    lp.add_argument("--url", required=True)
    lp.add_argument("--key", required=True)
    lp.add_argument("--bolt11", required=True)
    li = sub.add_parser("lnbits-invoice")
    li.add_argument("--url", required=True)
    li.add_argument("--key", required=True)
    li.add_argument("--bolt11", required=True)
    li.add_argument("--amount-msat", type=int)
    li.add_argument("--wallet")
    lb = sub.add_parser("lnbits-balance")
    lb.add_argument("--url", required=True)
    lb.add_argument("--key", required=True)

    r = sub.add_parser("request-check")
    r.add_argument("--dir", required=True)
    r.add_argument("--rcpt", required=True)
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--wait", type=float, default=30)
    r.add_argument("--settle", type=float, default=0)
    r.add_argument("--header", action="append")
    r.add_argument("--contains", action="append")
    r.add_argument("--line", action="append")
    r.add_argument("--absent", action="append")
    r.add_argument("--show", action="store_true")

    a = p.parse_args()
    fn = {
        "status": cmd_status, "imap-check": cmd_imap_check, "imap-find": cmd_imap_find,
        "http": cmd_http, "imap-move": cmd_imap_move, "lnbits-wallet": cmd_lnbits_wallet,
        "browser": cmd_browser, "lnbits-setup": cmd_lnbits_setup, "lnbits-pay": cmd_lnbits_pay,
        "lnbits-invoice": cmd_lnbits_invoice,
        "lnbits-balance": cmd_lnbits_balance, "request-check": cmd_request_check,
    }[a.cmd]
    sys.exit(fn(a))


if __name__ == "__main__":
    main()
