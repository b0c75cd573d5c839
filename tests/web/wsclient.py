#!/usr/bin/env python3
"""A tiny websocket client (stdlib only) for the flowrun serve tests.

  wsclient.py PORT [--origin O] [--host H] [--send JSON]... [--repeat N] [--expect SUBSTR]... [--raw-size N]
              [--drop-after N] [--timeout S] [--expect-refused] [--expect-close CODE] [--count SUBSTR N]...

Connects to ws://127.0.0.1:PORT/ws, sends each --send message (text), then reads messages until every
--expect substring has been seen in some message (exit 0), the timeout passes (exit 1) or the server
closes (exit 1, unless --expect-close CODE matches its close code). --raw-size N sends one text message
of N bytes. --drop-after N closes the socket abruptly (no close frame) after N messages.
--expect-refused: exit 0 when the upgrade is refused. --host sets the Host header (default
127.0.0.1:PORT). --repeat N sends the --send messages N times, all at once (pipelined). --count SUBSTR N
(repeatable) waits until N messages containing SUBSTR have come, for every --count given.
"""
import argparse, base64, os, socket, struct, sys, time


def handshake(port, origin, timeout, host=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    host = host or f"127.0.0.1:{port}"
    req = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if origin:
        req += f"Origin: {origin}\r\n"
    s.sendall((req + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            return None, head
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        return None, head
    rest = head.split(b"\r\n\r\n", 1)[1]
    return (s, rest), head


def frame_bytes(data, opcode=1):
    n = len(data)
    hdr = bytes([0x80 | opcode])
    if n < 126:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if n < 1 << 16 else \
        (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return hdr + mask + body


def send(s, data, opcode=1):
    s.sendall(frame_bytes(data, opcode))


class Reader:
    def __init__(self, s, buf):
        self.s, self.buf = s, buf

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self.need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.need(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.need(8))[0]
        return b0 & 0x0F, self.need(n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--origin")
    ap.add_argument("--host")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--send", action="append", default=[])
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--raw-size", type=int, default=0)
    ap.add_argument("--drop-after", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--expect-refused", action="store_true")
    ap.add_argument("--expect-close", type=int, default=0)
    ap.add_argument("--count", nargs=2, action="append", default=[], metavar=("SUBSTR", "N"),
                    help="wait for N messages containing SUBSTR")
    a = ap.parse_args()
    conn, head = handshake(a.port, a.origin, a.timeout, a.host)
    if a.expect_refused:
        print("refused" if conn is None else "accepted", head.split(b"\r\n", 1)[0].decode(errors="replace"))
        return 0 if conn is None else 1
    if conn is None:
        print("handshake failed:", head[:200])
        return 1
    s, rest = conn
    print("connected", flush=True)  # tests wait for this line before making the events they expect
    if a.send:  # one write for all: the server sees the requests pipelined
        s.sendall(b"".join(frame_bytes(m.encode()) for _ in range(a.repeat) for m in a.send))
    if a.raw_size:
        send(s, b"x" * a.raw_size)
    r = Reader(s, rest)
    want = list(a.expect)
    counts = {sub: [0, int(n)] for sub, n in a.count}
    deadline = time.time() + a.timeout
    seen = 0
    try:
        while True:
            s.settimeout(max(0.1, deadline - time.time()))
            op, data = r.frame()
            if op == 8:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
                print("closed", code)
                return 0 if a.expect_close and code == a.expect_close and not want else 1
            text = data.decode(errors="replace")
            want = [w for w in want if w not in text]
            if counts:
                for sub, c in counts.items():
                    c[0] += sub in text
                if any(c[0] < c[1] for c in counts.values()) or want:
                    continue
                print("ok", ", ".join(f"{c[0]} x {sub}" for sub, c in counts.items()))
                return 0
            seen += 1
            if a.drop_after and seen >= a.drop_after:
                s.close()  # abrupt: no close frame
                return 0
            if not want and not a.expect_close and not a.drop_after:
                print("ok", text[:200])
                return 0
    except (socket.timeout, TimeoutError):
        print("timeout; still waiting for", want, {k: f"{c[0]} of {c[1]}" for k, c in counts.items()})
        return 1
    except (EOFError, ConnectionError) as e:
        print("connection ended:", e)
        return 1


sys.exit(main())
