#!/usr/bin/env python3
"""Watch a Kafka topic's end offsets until they add up to a target, sampling a process's
footprint meanwhile. Standard library only (speaks ListOffsets v1 on a raw socket), so polling
every 100 ms costs no JVM start. Used by scripts/bench-debezium.

  kafka_watch.py --brokers 127.0.0.1:9092 --topic T --target N [--pid PID] [--t0 EPOCH]
                 [--timeout S] [--interval S] [--progress] [--status-url URL]

Prints one JSON object on stdout:
  t_first  seconds from t0 to the first message seen in the topic
  t_done   seconds from t0 until the end offsets reached the target
  count    the end offsets' sum at exit
  hwm_kb   the process's peak RSS (VmHWM) at exit, kb
  cpu_s_total  utime+stime of the process at t_done (from its start)
  cpu_s_first  utime+stime when the first message was seen
  samples  [t, count] pairs (at most one per poll) for drain plots
Exit 0 when the target was reached, 3 on timeout, 4 when the process died first, 5 when the
connector or its task reported FAILED at --status-url.
The one broker of the test setup leads every partition, so one connection is enough.
"""
import argparse
import json
import os
import socket
import struct
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # REST is on loopback


class Kafka:
    def __init__(self, broker):
        host, port = broker.rsplit(":", 1)
        self.addr = (host, int(port))
        self.sock = None
        self.corr = 0

    def _conn(self):
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=5)
        return self.sock

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def end_offsets(self, topic, max_partitions=64):
        """Sum of the latest offsets over the topic's partitions (0 if the topic is absent)."""
        self.corr += 1
        client = b"kafka_watch"
        t = topic.encode()
        body = struct.pack(">hhih", 2, 1, self.corr, len(client)) + client  # ListOffsets v1
        body += struct.pack(">ii", -1, 1) + struct.pack(">h", len(t)) + t
        body += struct.pack(">i", max_partitions)
        for p in range(max_partitions):
            body += struct.pack(">iq", p, -1)
        try:
            s = self._conn()
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", self._recv(4))
            data = self._recv(size)
        except OSError:
            if self.sock:
                self.sock.close()
            self.sock = None
            raise
        (corr,) = struct.unpack_from(">i", data, 0)
        assert corr == self.corr, "correlation id mismatch"
        pos = 4
        (ntopics,) = struct.unpack_from(">i", data, pos)
        pos += 4
        total = 0
        for _ in range(ntopics):
            (tl,) = struct.unpack_from(">h", data, pos)
            pos += 2 + tl
            (nparts,) = struct.unpack_from(">i", data, pos)
            pos += 4
            for _ in range(nparts):
                _p, err, _ts, off = struct.unpack_from(">ihqq", data, pos)
                pos += 22
                if err == 0 and off > 0:
                    total += off
        return total


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--t0", type=float, default=None)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--status-url", help="Kafka Connect connector status URL; FAILED ends the watch")
    a = ap.parse_args()

    t0 = a.t0 if a.t0 is not None else time.time()
    k = Kafka(a.brokers.split(",")[0])
    res = {"topic": a.topic, "target": a.target, "t_first": None, "t_done": None, "count": 0,
           "hwm_kb": 0, "cpu_s_total": None, "cpu_s_first": None, "samples": []}
    last_print = 0.0
    last_status = 0.0
    rc = 3
    while True:
        now = time.time()
        if now - t0 > a.timeout:
            break
        if a.pid:
            try:
                res["hwm_kb"] = max(res["hwm_kb"], proc_hwm(a.pid))
                cpu = proc_cpu(a.pid)
            except (FileNotFoundError, ProcessLookupError):
                rc = 4
                break
        if a.status_url and now - last_status >= 1:
            last_status = now
            try:
                with NO_PROXY.open(a.status_url, timeout=2) as r:
                    st = r.read().decode()
                if '"FAILED"' in st:
                    res["failed"] = st
                    rc = 5
                    break
            except (OSError, ValueError):
                pass  # REST not up yet, or the connector not created yet
        try:
            n = k.end_offsets(a.topic)
        except (OSError, AssertionError, struct.error):
            n = res["count"]
        t = time.time() - t0
        if n != res["count"] or not res["samples"]:
            res["samples"].append([round(t, 3), n])
        res["count"] = n
        if n > 0 and res["t_first"] is None:
            res["t_first"] = round(t, 3)
            if a.pid:
                res["cpu_s_first"] = cpu
        if a.progress and (now - last_print >= 1 or n >= a.target):
            last_print = now
            pct = 100.0 * n / a.target if a.target else 100.0
            print(f"\r  {t:7.1f} s  {n:>10,} / {a.target:,} messages ({pct:5.1f}%)", end="",
                  file=sys.stderr, flush=True)
        if n >= a.target:
            res["t_done"] = round(t, 3)
            if a.pid:
                try:
                    res["cpu_s_total"] = proc_cpu(a.pid)
                    res["hwm_kb"] = max(res["hwm_kb"], proc_hwm(a.pid))
                except (FileNotFoundError, ProcessLookupError):
                    pass
            rc = 0
            break
        time.sleep(a.interval)
    if a.progress:
        print(file=sys.stderr)
    print(json.dumps(res))
    return rc


if __name__ == "__main__":
    sys.exit(main())
