"""One large Push against a running server, to measure the server's peak memory for it.

Usage: push_rss.py HOST:PORT ROWS

Applies nothing: the server must serve the view `clicks` of `benches/push_rss.yaml` (key
`user_id` int64, features `a` int64, `b` float64, `s` string, push-only source). Sends one
PushRequest of ROWS rows (online and offline), encoded by hand (protobuf wire format, as any
generated stub would send it), and prints its size and the call's wall time. Read the server's
peak RSS from /proc/PID/status (VmHWM) before and after.
"""

import struct
import sys
import time

import grpc


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def packed_varints(values):
    return field(1, b"".join(varint(v) for v in values))


def column(kind, values_message):
    return field(kind, values_message)


def named(name, col):
    return field(1, name.encode()) + field(2, col)


def push_request(rows, first=0, users=None):
    """ROWS rows from row FIRST: user i (or i % USERS), event time t0 + i."""
    t0 = 1_800_000_000_000_000
    ids = range(first, first + rows)
    keys = ids if users is None else [i % users for i in ids]
    columns = [
        named("user_id", column(3, packed_varints(keys))),
        named("event_timestamp", column(8, packed_varints(t0 + i for i in ids))),
        named("a", column(3, packed_varints(ids))),
        named("b", column(5, field(1, struct.pack(f"<{rows}d", *(i * 0.5 for i in ids))))),
        named("s", column(6, b"".join(field(1, f"value-{i}".encode()) for i in ids))),
    ]
    mode = varint(4 << 3 | 0) + varint(3)  # PUSH_MODE_ONLINE_AND_OFFLINE
    return field(1, b"clicks") + b"".join(field(3, c) for c in columns) + mode


def main():
    target, rows = sys.argv[1], int(sys.argv[2])
    request = push_request(rows)
    options = [("grpc.max_send_message_length", 256 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        push = channel.unary_unary("/quiver.v1.OnlineService/Push")
        started = time.monotonic()
        push(request, timeout=600)
        print(f"pushed {rows} rows, {len(request)} bytes, in {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    main()
