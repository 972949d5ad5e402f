#!/usr/bin/env python3
"""Holds many idle IMAP connections open, for memory measurements (scripts/imap-bench).

    imap_idle_hold.py --port P --user U --password W --count 1000 [--parallel 50] [--churn]

Opens COUNT plain connections to 127.0.0.1:P (asyncio, stdlib only); each reads the
greeting, LOGINs, SELECTs INBOX and sends IDLE, then waits. When all are idling (or a
connection failed) it prints one line: "idling N failed M seconds S" (S: how long it took
to set them all up) and keeps them open until a line (or EOF) arrives on standard input;
then each sends DONE and LOGOUT, and it prints "closed". Each connection answers the
server's untagged responses silently. Needs enough open files (ulimit -n) for COUNT.
With --churn each connection LOGOUTs right after its SELECT instead (at most PARALLEL are
open at once); it prints "churned N failed M seconds S" and exits.
"""

import argparse
import asyncio
import sys
import time


async def expect(reader, tag, timeout=120):
    """Reads lines up to the one starting with TAG (tag b'+' for a continuation)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed by the server")
        if line.startswith(tag):
            if tag not in (b"+", b"* OK") and not line.startswith(tag + b" OK"):
                raise ConnectionError(line.decode("latin-1").strip())
            return line


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def one(args, sem, i):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port, limit=1 << 20)
        await expect(reader, b"* OK")
        writer.write(b"a LOGIN %s %s\r\n" % (quote(args.user).encode(), quote(args.password).encode()))
        await expect(reader, b"a")
        writer.write(b"b SELECT INBOX\r\n")
        await expect(reader, b"b")
        if args.churn:
            writer.write(b"d LOGOUT\r\n")
            await expect(reader, b"d")
            writer.close()
            return None
        writer.write(b"c IDLE\r\n")
        await expect(reader, b"+")
    return reader, writer


async def drain(reader):
    try:
        while await reader.readline():
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--churn", action="store_true", help="log out at once instead of idling")
    args = ap.parse_args()
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    results = await asyncio.gather(*(one(args, sem, i) for i in range(args.count)), return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    print("%s %d failed %d seconds %.1f" % ("churned" if args.churn else "idling", len(conns), len(errors),
                                            time.monotonic() - t0), flush=True)
    for e in errors[:3]:
        print("# %s: %s" % (type(e).__name__, e), file=sys.stderr)
    if args.churn:
        return
    drains = [asyncio.create_task(drain(r)) for r, _ in conns]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for t in drains:
        t.cancel()
    for r, w in conns:
        try:
            w.write(b"DONE\r\nd LOGOUT\r\n")
        except (ConnectionError, RuntimeError):
            pass
    for r, w in conns:
        try:
            await asyncio.wait_for(w.drain(), 5)
            w.close()
        except (ConnectionError, asyncio.TimeoutError):
            pass
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
