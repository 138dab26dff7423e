#!/usr/bin/python3
"""A TCP relay that adds a one-way latency to both directions of every connection.

This kernel has no sch_netem, so the netshare harness gets its latency here, in userspace.
usage: relay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_FILE
CONTROL_FILE holds the one-way delay in ms (the round trip grows by twice that); it is re-read
every 0.2 s, so the delay changes for open connections too. Byte order is preserved. When
either side of a connection ends, both are closed (so a dead server is seen at once). Only the
standard library; runs until killed.
"""
import collections
import os
import socket
import sys
import threading
import time

LH, LP, TH, TP, CTL = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
CONNECT_TIMEOUT = 1.0  # a healthy connect over the veth takes well under 1 ms
_delay = {"value": 0.0, "checked": 0.0, "mtime": None}
_delay_lock = threading.Lock()


def delay():
    now = time.monotonic()
    with _delay_lock:
        if now - _delay["checked"] > 0.2:
            _delay["checked"] = now
            try:
                mtime = os.stat(CTL).st_mtime_ns
                if mtime != _delay["mtime"]:
                    with open(CTL) as f:
                        words = f.read().split()
                    _delay["value"] = float(words[0]) / 1000.0 if words else 0.0
                    _delay["mtime"] = mtime
            except (OSError, ValueError):
                pass
        return _delay["value"]


def close_both(a, b):
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump(src, dst):
    """Copies src to dst, each chunk sent `delay()` after it was received."""
    queue = collections.deque()
    cv = threading.Condition()
    state = {"eof": False}

    def writer():
        try:
            while True:
                with cv:
                    while not queue and not state["eof"]:
                        cv.wait()
                    if not queue:
                        return
                    due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_both(src, dst)

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            with cv:
                queue.append((time.monotonic() + delay(), data))
                cv.notify()
    except OSError:
        pass
    with cv:
        state["eof"] = True
        cv.notify()
    # let the delayed bytes drain, but never wait on a stalled peer for long
    w.join(timeout=delay() + 2.0)
    close_both(src, dst)


def handle(client):
    try:
        upstream = socket.create_connection((TH, TP), timeout=CONNECT_TIMEOUT)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = [
        threading.Thread(target=pump, args=(client, upstream), daemon=True),
        threading.Thread(target=pump, args=(upstream, client), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LH, LP))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
