#!/usr/bin/env python3
"""Reference rig for the rtvla wire protocol, version 2 (docs/wire-protocol.md). Standard library only.

Bridge your own simulator by replacing `ToyWorld` with it: each step, send the ego state and the camera frame,
wait for the command computed from that frame (lockstep), apply it, repeat. This file is also what CI drives the
`rtvla` binary with, so the document, this client and the Rust code cannot drift apart.

    python3 tools/rtvla_rig.py --bind 127.0.0.1:47700 --ticks 40 [--key rig.key]
    rtvla drive --board hil-local          # in another terminal (vehicle.peer = the rig's address)
"""

import argparse
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

WIRE_VERSION = 2
MAX_DATAGRAM = 1400
TAG_LEN = 32
CHUNK_BYTES = 1280

# Enum variant indices, in declaration order (postcard encodes an enum as a varint index, then its fields).
HELLO, COMMAND, STATE, FRAME_CHUNK = 0, 1, 2, 3
ROLE_RUNTIME, ROLE_RIG = 0, 1
PACING_LOCKSTEP, PACING_REALTIME = 0, 1
FORMAT_RGB8, FORMAT_YUYV, FORMAT_JPEG = 0, 1, 2


# --- postcard, the parts the protocol uses -------------------------------------------------------------------
def varint(n):
    """Unsigned LEB128: u16, u32 and u64 are varints in postcard."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f32(x):
    return struct.pack("<f", x)


def boolean(b):
    return b"\x01" if b else b"\x00"


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def varint(self):
        shift = n = 0
        while True:
            b = self.data[self.at]
            self.at += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def f32(self):
        (v,) = struct.unpack_from("<f", self.data, self.at)
        self.at += 4
        return v


# --- datagrams -----------------------------------------------------------------------------------------------
class Wire:
    def __init__(self, key=None):
        self.key = key
        self.session = int.from_bytes(os.urandom(8), "little") or 1
        self.seq = 1

    def encode(self, body):
        d = varint(WIRE_VERSION) + varint(self.session) + varint(self.seq) + body
        self.seq += 1
        if self.key is not None:
            d += hmac.new(self.key, d, hashlib.sha256).digest()
        assert len(d) <= MAX_DATAGRAM, len(d)
        return d

    def decode(self, data):
        """(session, seq, variant, Reader at the body's fields), or None for a datagram to refuse."""
        if self.key is not None:
            if len(data) < TAG_LEN:
                return None
            data, tag = data[:-TAG_LEN], data[-TAG_LEN:]
            if not hmac.compare_digest(tag, hmac.new(self.key, data, hashlib.sha256).digest()):
                return None
        r = Reader(data)
        try:
            if r.varint() != WIRE_VERSION:
                return None
            return r.varint(), r.varint(), r.varint(), r
        except (IndexError, struct.error):
            return None


def hello_rig():
    return varint(HELLO) + varint(ROLE_RIG)


def state(frame, speed, target_points, done=False, ttc=float("inf"), collision=False, infraction=False):
    tp = b"".join(f32(v) for p in target_points for v in p)
    return (varint(STATE) + varint(frame) + f32(speed) + tp + boolean(done) + f32(ttc)
            + boolean(collision) + boolean(infraction))


def frame_chunks(frame, image, width, height, fmt=FORMAT_RGB8, pacing=PACING_LOCKSTEP):
    chunks = (len(image) + CHUNK_BYTES - 1) // CHUNK_BYTES
    captured_us = time.monotonic_ns() // 1000
    for i in range(chunks):
        data = image[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES]
        yield (varint(FRAME_CHUNK) + varint(frame) + varint(i) + varint(chunks) + varint(len(image))
               + varint(captured_us) + varint(pacing) + varint(fmt) + varint(width) + varint(height)
               + varint(len(data)) + data)


def read_command(r):
    tick, frame = r.varint(), r.varint()
    return tick, frame, (r.f32(), r.f32(), r.f32())


# --- a toy world: a straight road, the ego car's speed from throttle and brake -----------------------------------
class ToyWorld:
    def __init__(self, width, height):
        self.w, self.h, self.speed = width, height, 0.0

    def image(self):
        sky, road = bytes((120, 160, 220)), bytes((90, 90, 90))
        rows = [sky * self.w if y < self.h // 2 else road * self.w for y in range(self.h)]
        return b"".join(rows)

    def step(self, steer, throttle, brake, dt=0.05):
        self.speed = max(0.0, self.speed + (3.0 * throttle - 8.0 * brake) * dt)


def load_key(path):
    if path is None:
        return None
    text = "".join(open(path).read().split())
    return bytes.fromhex(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", default="127.0.0.1:47700", help="address the runtime's vehicle.peer names")
    ap.add_argument("--key", help="pre-shared key file (hex), the board's vehicle.key_file")
    ap.add_argument("--ticks", type=int, default=40, help="steps before the rig says done")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the runtime")
    ap.add_argument("--json", help="write what the rig saw (commands, counts) here")
    a = ap.parse_args()

    host, port = a.bind.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    sock.settimeout(a.timeout)
    wire = Wire(load_key(a.key))

    # 1. Wait for the runtime's Hello; it names its address and session.
    while True:
        data, runtime = sock.recvfrom(MAX_DATAGRAM + 1)
        d = wire.decode(data)
        if d and d[2] == HELLO and d[3].varint() == ROLE_RUNTIME:
            runtime_session = d[0]
            break
    sock.sendto(wire.encode(hello_rig()), runtime)

    # 2. Lockstep: state + frame N, then the command computed from frame N.
    world, commands, refused = ToyWorld(a.width, a.height), [], 0
    for frame in range(a.ticks + 1):
        done = frame == a.ticks
        sock.sendto(wire.encode(state(frame, world.speed, [[10.0, 0.0], [30.0, 0.0]], done)), runtime)
        for chunk in frame_chunks(frame, world.image(), a.width, a.height):
            sock.sendto(wire.encode(chunk), runtime)
        while True:
            data, src = sock.recvfrom(MAX_DATAGRAM + 1)
            d = wire.decode(data)
            if src != runtime or d is None or d[0] != runtime_session:
                refused += 1
                continue
            if d[2] != COMMAND:
                continue
            tick, answered, (steer, throttle, brake) = read_command(d[3])
            if answered == frame:
                break
        commands.append({"tick": tick, "frame": answered, "steer": steer, "throttle": throttle, "brake": brake})
        world.step(steer, throttle, brake)

    ok = all(-1 <= c["steer"] <= 1 and 0 <= c["throttle"] <= 1 and 0 <= c["brake"] <= 1 for c in commands)
    summary = {"commands": len(commands), "refused": refused, "in_range": ok, "final_speed": world.speed,
               "log": commands}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"rig: {len(commands)} commands for {a.ticks + 1} frames, {refused} refused, "
          f"final speed {world.speed:.2f} m/s, commands in range: {ok}")
    return 0 if ok and len(commands) == a.ticks + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
