#!/usr/bin/env python3
"""Open N keep-alive connections to an HTTP/1.1 server, send one request on each, read the
response, then hold every connection open (idle) until told to stop.

Usage: idle_conns.py HOST PORT N [--path /] [--hold 60] [--concurrency 256] [--tls]

Prints `READY <ok> <failed>` on stdout once all N connections have been opened and answered
(or have failed), then holds them until SIGTERM/SIGINT arrives or `--hold`
seconds pass. Used by bench/run.sh to measure a proxy's RSS with 10k idle client connections.
Raise `ulimit -n` before running it (the caller does).
"""
import argparse
import asyncio
import resource
import signal


async def one(host, port, path, sem, conns, timeout, tls=None):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), timeout)
        except Exception:
            return False
        try:
            req = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Connection: keep-alive\r\nUser-Agent: idle-conns\r\n\r\n"
            ).encode()
            w.write(req)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v.strip())
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await asyncio.wait_for(r.readline(), timeout)).split(b";")[0], 16)
                    await asyncio.wait_for(r.readexactly(size + 2), timeout)
                    if size == 0:
                        break
            elif length:
                await asyncio.wait_for(r.readexactly(length), timeout)
            if not (head.startswith(b"HTTP/1.1 2") or head.startswith(b"HTTP/1.0 2")):
                w.close()
                return False
            conns.append(w)
            return True
        except Exception:
            w.close()
            return False


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--path", default="/")
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--tls", action="store_true", help="TLS (HTTP/1.1 by ALPN), no verification")
    a = ap.parse_args()
    tls = None
    if a.tls:
        import ssl

        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass

    sem = asyncio.Semaphore(a.concurrency)
    conns = []
    results = await asyncio.gather(
        *(one(a.host, a.port, a.path, sem, conns, a.timeout, tls) for _ in range(a.n))
    )
    ok = sum(1 for x in results if x)
    print(f"READY {ok} {a.n - ok}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)

    try:
        await asyncio.wait_for(stop.wait(), a.hold)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
