#!/usr/bin/python3
"""The reference DLOG proof algorithm, run with Debian's python3-ecdsa.

An implementation independent of the TypeScript one (different language, different
curve library), used only by the tests to cross-check DLOG-SECP256K1-SHA256/v1:

  vectors   print proofs made with fixed secrets and fixed nonces (JSON on stdout)
  prove     read [{sid, pid, x, base?}] on stdin, print proofs made with random nonces
  verify    read [{sid, pid, y, base?, proof: {t, s}}] on stdin, print [true|false, ...]

The algorithm is the reference's (prove: T = r*B, c = H(sid, pid, B, Y, T),
s = (r + c*x) mod q; verify: s*B == T + c*Y). The reference hashes through private
serializers, so the hash input here is the documented v1 encoding:
SHA-256(UTF-8(sid) || pid as 32-byte big-endian || B || Y || T), points SEC1 compressed.
Like the reference, verify accepts any s (no s < q check): that difference is the
TypeScript side's, on purpose.
"""

import hashlib
import json
import secrets
import sys

import ecdsa
from ecdsa.ellipticcurve import PointJacobi

CURVE = ecdsa.SECP256k1
G = CURVE.generator
q = CURVE.order


def encode_point(point):
    return point.to_bytes("compressed").hex()


def decode_point(text):
    if len(text) != 66 or text != text.lower():
        raise ValueError("expected 66 lowercase hex characters")
    return PointJacobi.from_bytes(CURVE.curve, bytes.fromhex(text), valid_encodings=["compressed"])


def hash_points(sid, pid, points):
    h = hashlib.sha256()
    h.update(sid.encode("utf-8"))
    h.update(pid.to_bytes(32, "big"))
    for point in points:
        h.update(point.to_bytes("compressed"))
    return int.from_bytes(h.digest(), "big")


def prove(sid, pid, x, y, base, r):
    t = r * base
    c = hash_points(sid, pid, [base, y, t]) % q
    s = (r + c * x) % q
    return {"t": encode_point(t), "s": format(s, "064x")}


def verify(sid, pid, y, base, proof):
    t = decode_point(proof["t"])
    s = int(proof["s"], 16)
    c = hash_points(sid, pid, [base, y, t]) % q
    return s * base == t + c * y


def fixed_scalar(label):
    """A scalar in [1, q-1] derived from a label, so vectors are reproducible."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (q - 1) + 1


def vectors():
    other_base = fixed_scalar("duet dlog vector base") * G
    cases = [
        ("ascii sid, pid 1, base G", "sid", 1, fixed_scalar("x1"), fixed_scalar("r1"), None),
        ("empty sid, pid 0", "", 0, fixed_scalar("x2"), fixed_scalar("r2"), None),
        ("Cyrillic and emoji sid", "комната-\U0001f510", 7, fixed_scalar("x3"), fixed_scalar("r3"), None),
        ("largest pid 2^256-1", "sid", 2**256 - 1, fixed_scalar("x4"), fixed_scalar("r4"), None),
        ("x = 1 and r = 1", "edge", 2, 1, 1, None),
        ("x = q-1 and r = q-1", "edge", 3, q - 1, q - 1, None),
        ("a base point other than G", "room-42", 1, fixed_scalar("x5"), fixed_scalar("r5"), other_base),
        ("long sid (1000 bytes)", "s" * 1000, 12345678901234567890, fixed_scalar("x6"), fixed_scalar("r6"), None),
    ]
    out = []
    for comment, sid, pid, x, r, base in cases:
        b = base if base is not None else G
        y = x * b
        out.append({
            "comment": comment,
            "sid": sid,
            "pid": str(pid),
            "x": format(x, "064x"),
            "r": format(r, "064x"),
            "base": encode_point(b),
            "y": encode_point(y),
            "proof": prove(sid, pid, x, y, b, r),
        })
    return {"encoding": "DLOG-SECP256K1-SHA256/v1", "generator": "packages/dlog/interop/dlog_reference.py vectors", "vectors": out}


def base_of(item):
    return decode_point(item["base"]) if item.get("base") else G


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "vectors":
        result = vectors()
    elif command == "prove":
        result = []
        for item in json.load(sys.stdin):
            base = base_of(item)
            x = int(item["x"], 16)
            y = x * base
            r = secrets.randbelow(q - 1) + 1
            result.append({"y": encode_point(y), "proof": prove(item["sid"], int(item["pid"]), x, y, base, r)})
    elif command == "verify":
        result = []
        for item in json.load(sys.stdin):
            try:
                ok = verify(item["sid"], int(item["pid"]), decode_point(item["y"]), base_of(item), item["proof"])
            except Exception:  # hostile input is "invalid", as on the TypeScript side
                ok = False
            result.append(bool(ok))
    else:
        print("usage: dlog_reference.py vectors|prove|verify", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
