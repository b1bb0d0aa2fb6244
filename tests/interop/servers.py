#!/usr/bin/env python3
"""Servers behind the wireguard-go peer, run inside its network namespace:
HTTP (files from a directory), TCP echo and UDP echo on port 7, and a DNS
responder on port 53 that knows `files.test`. Standard library only."""
import argparse
import http.server
import os
import socket
import socketserver
import struct
import threading


def tcp_echo(addr):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 7))
    srv.listen(128)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo_conn, args=(conn,), daemon=True).start()


def echo_conn(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def udp_echo(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 7))
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


def dns(addr):
    """A for files.test answers `addr`; AAAA for it is empty; all else NXDOMAIN."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        rcode, answers = 0, b""
        if name != "files.test":
            rcode = 3
        elif qtype == 1:
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(addr)
        head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        s.sendto(head + question + answers, peer)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    for target in (tcp_echo, udp_echo, dns):
        threading.Thread(target=target, args=(a.addr,), daemon=True).start()
    os.chdir(a.dir)
    socketserver.TCPServer.allow_reuse_address = True
    with http.server.ThreadingHTTPServer((a.addr, 8000), Quiet) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    main()
