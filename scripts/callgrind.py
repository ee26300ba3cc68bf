#!/usr/bin/env python3
"""Instructions per call of each LOCK.* path and of its native counterpart.

Runs redis-server under callgrind, collecting only inside processCommand (a
command's whole server-side work: lookup, ACL, execution, propagation to the
AOF), sends N calls of one path at a time and reads the instruction count
that callgrind dumps after each. Instruction counts repeat exactly from run
to run, so unlike timings they show small differences on a noisy machine.

usage: scripts/callgrind.py MODULE [REDIS_SERVER ...]
env:   CALLS (default 5000) calls per path
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

CALLS = int(os.environ.get("CALLS", "5000"))
TOKEN = b"Qm9Fz2pX7kLr3Ws8Tn1Vy6Hd"  # 24 bytes, like the client's tokens
OTHER = b"Zx8Ck2Lm4Nb6Vq0Wr3Et5Yu7"


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind = line[:1]
        if kind == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 16)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self._reply() for _ in range(max(int(line[1:]), 0))]
        if kind == b"-":
            raise RuntimeError(line.decode())
        return line[1:]

    def pipeline(self, commands):
        """Sends the commands in batches and reads every reply."""
        replies = []
        for i in range(0, len(commands), 500):
            batch = commands[i:i + 500]
            self.s.sendall(b"".join(batch))
            replies += [self._reply() for _ in batch]
        return replies

    def call(self, *args):
        return self.pipeline([resp(*args)])[0]


# (path, setup commands, measured commands); `k` is the call's index.
def paths():
    keys = lambda p: [b"%s:%d" % (p, k) for k in range(CALLS)]
    held = lambda p, tok=TOKEN: [resp("LOCK.ACQUIRE", k, tok, 600000) for k in keys(p)]
    plain = lambda p: [resp("SET", k, TOKEN, "NX", "PX", 600000) for k in keys(p)]
    return [
        ("grant", "LOCK.ACQUIRE (free key)", [], [resp("LOCK.ACQUIRE", k, TOKEN, 600000) for k in keys(b"g")],
         "SET NX PX (free key)", [], [resp("SET", k, TOKEN, "NX", "PX", 600000) for k in keys(b"gs")]),
        ("refusal", "LOCK.ACQUIRE (held by another)", held(b"r"), [resp("LOCK.ACQUIRE", k, OTHER, 600000) for k in keys(b"r")],
         "SET NX PX (key exists)", plain(b"rs"), [resp("SET", k, OTHER, "NX", "PX", 600000) for k in keys(b"rs")]),
        ("renewal", "LOCK.EXTEND", held(b"e"), [resp("LOCK.EXTEND", k, TOKEN, 600000) for k in keys(b"e")],
         "PEXPIRE", plain(b"es"), [resp("PEXPIRE", k, 600000) for k in keys(b"es")]),
        ("renewal (ACQUIRE)", "LOCK.ACQUIRE (holder)", held(b"a"), [resp("LOCK.ACQUIRE", k, TOKEN, 600000) for k in keys(b"a")],
         "PEXPIRE", plain(b"as"), [resp("PEXPIRE", k, 600000) for k in keys(b"as")]),
        ("release", "LOCK.RELEASE", held(b"d"), [resp("LOCK.RELEASE", k, TOKEN) for k in keys(b"d")],
         "DEL", plain(b"ds"), [resp("DEL", k) for k in keys(b"ds")]),
        ("check", "LOCK.CHECK", held(b"c"), [resp("LOCK.CHECK", k, TOKEN) for k in keys(b"c")],
         "GET", plain(b"cs"), [resp("GET", k) for k in keys(b"cs")]),
    ]


def measure(server, module):
    work = tempfile.mkdtemp(prefix="lock-callgrind-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(work, "callgrind.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no",
         "--toggle-collect=processCommand", f"--callgrind-out-file={out}",
         server, "--port", str(port), "--bind", "127.0.0.1", "--dir", work,
         "--save", "", "--appendonly", os.environ.get("AOF", "yes"), "--appendfsync", "no",
         "--loadmodule", module],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                conn = Conn(port)
                conn.call("PING")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        info = conn.call("INFO", "server")
        # Valkey also reports a redis_version (of the API it is compatible with).
        version = (re.search(rb"valkey_version:\S+", info) or re.search(rb"redis_version:\S+", info)).group(0).decode()
        rows = []
        for name, mod_label, mod_setup, mod_cmds, nat_label, nat_setup, nat_cmds in paths():
            counts = []
            for setup, cmds in ((mod_setup, mod_cmds), (nat_setup, nat_cmds)):
                conn.pipeline(setup)
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
                conn.pipeline(cmds)
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
                counts.append(last_dump_instructions(out) / len(cmds))
                if os.environ.get("KEEP"):
                    print(f"{name}: {latest_dump(out)}", file=sys.stderr)
            rows.append((name, mod_label, counts[0], nat_label, counts[1]))
        return version, rows
    finally:
        proc.kill()
        proc.wait()


def latest_dump(out):
    dumps = sorted((f for f in os.listdir(os.path.dirname(out)) if f.startswith("callgrind.out.")),
                   key=lambda f: int(f.rsplit(".", 1)[1]))
    return os.path.join(os.path.dirname(out), dumps[-1])


def last_dump_instructions(out):
    path = latest_dump(out)
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main():
    module = os.path.abspath(sys.argv[1])
    servers = sys.argv[2:] or ["redis-server"]
    print(f"Instructions per call inside processCommand (callgrind, {CALLS} calls per path, appendonly {os.environ.get('AOF', 'yes')})")
    for server in servers:
        version, rows = measure(server, module)
        print(f"\n{version}\n")
        print("| path | module command | instructions | native command | instructions | ratio |")
        print("|---|---|---|---|---|---|")
        for name, ml, mi, nl, ni in rows:
            print(f"| {name} | {ml} | {mi:,.0f} | {nl} | {ni:,.0f} | {mi / ni:.2f}× |")


if __name__ == "__main__":
    main()
