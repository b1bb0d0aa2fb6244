#!/usr/bin/env python3
"""Where one SOCKS5 request's time to first byte goes, step by step, from a
capture of both the proxy's loopback port and the WireGuard UDP:

    tcpdump -i any -n -tt -U -w cap.pcap 'udp port 51820 or tcp port SOCKS'
    ... curl --socks5 127.0.0.1:SOCKS http://.../hello, many times ...
    tcpdump -r cap.pcap -n -tt | ttfb_steps.py SOCKS

Each step is the time between two packets on the wire, so it says whose
turn it was: curl's, underpass's or the peer's (wireguard-go, its kernel
and the server). Pure ACKs of 80 bytes on the UDP side are skipped where a
reply with data is awaited. Standard library only."""
import re
import statistics
import sys

STEPS = [
    # (name, whose turn, what ends the step)
    ("proxy connect -> greeting", "curl", "c"),
    ("greeting -> method reply", "underpass", "p"),
    ("method reply -> CONNECT", "curl", "c"),
    ("CONNECT -> SYN sent", "underpass", "U>"),
    ("SYN -> SYN-ACK", "peer", "U<"),
    # The bare ACK of the SYN-ACK is no step of its own: curl waits for
    # the SOCKS reply, not for it, and underpass sends it after the reply.
    ("SYN-ACK -> SOCKS reply", "underpass", "p"),
    ("SOCKS reply -> request", "curl", "c"),
    ("request -> sent", "underpass", "U>"),
    ("sent -> response", "peer", "U<data"),
    ("response -> to curl", "underpass", "p"),
]


def events(lines, port):
    for line in lines:
        m = re.match(r"(\d+\.\d+) (\S+)\s+(In|Out)\s+IP (\S+) > (\S+): (.*)", line)
        if not m:
            continue
        t, ifc, way, src, dst, rest = m.groups()
        n = re.search(r"length (\d+)", rest)
        n = int(n.group(1)) if n else 0
        if src.endswith(f".{port}") or dst.endswith(f".{port}"):
            if ifc != "lo":
                continue
            if dst.endswith(f".{port}") and "[S]" in rest:
                yield float(t), "syn", n
            elif n and dst.endswith(f".{port}"):
                yield float(t), "c", n
            elif n:
                yield float(t), "p", n
        else:
            yield float(t), "U>" if way == "Out" else "U<", n


def main():
    port = sys.argv[1] if len(sys.argv) > 1 else "1080"
    evs = list(events(sys.stdin.read().splitlines(), port))
    got = [[] for _ in STEPS]
    i = 0
    while i < len(evs):
        if evs[i][1] != "syn":
            i += 1
            continue
        times, j = [evs[i][0]], i + 1
        for _, _, want in STEPS:
            while j < len(evs):
                t, kind, n = evs[j]
                j += 1
                if kind == "syn":
                    j -= 1
                    break
                if want == "U<data" and kind == "U<" and n > 80:
                    times.append(t)
                    break
                if kind == want:
                    times.append(t)
                    break
            if len(times) == len(STEPS) + 1 or (j < len(evs) and evs[j][1] == "syn"):
                break
        if len(times) == len(STEPS) + 1:
            for k in range(len(STEPS)):
                got[k].append((times[k + 1] - times[k]) * 1e6)
        i = j
    n = len(got[0])
    if n == 0:
        print("no complete SOCKS5 request in the capture")
        return
    print(f"{n} requests, microseconds between packets, median / p90")
    whose = {}
    for (name, who, _), v in zip(STEPS, got):
        v.sort()
        med = statistics.median(v)
        whose[who] = whose.get(who, 0) + med
        print(f"  {name:28} {who:10} {med:6.0f} {v[int(len(v) * 0.9)]:6.0f}")
    print("  sum of medians: " + ", ".join(f"{w} {t:.0f}" for w, t in whose.items()))


main()
