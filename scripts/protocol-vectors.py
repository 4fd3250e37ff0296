# The version 2 test vectors of docs/PROTOCOL.md, computed independently of the Rust code with
# Python `cryptography` (CMAC for the run keys, AESGCM for the sealed frames): python3 scripts/protocol-vectors.py
import struct, sys
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes(range(16))

from cryptography.hazmat.primitives.cmac import CMAC
def run_key(key, cluster, sender, inc, salt):
    run = struct.pack(">HII", sender, cluster, inc) + salt
    c = CMAC(algorithms.AES(key)); c.update(run)
    return c.finalize()

def fnv_tag(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return struct.pack(">Q", h) + b"INSECURE"

def seal(frame):
    hdr, body = bytearray(frame[:32]), frame[32:]
    cluster, = struct.unpack(">I", hdr[12:16])
    sender, = struct.unpack(">H", hdr[10:12])
    inc, = struct.unpack(">I", hdr[16:20])
    salt = bytes(hdr[20:26])
    seq = bytes(hdr[26:32])
    nonce = salt + seq
    assert nonce == bytes(hdr[20:32])
    assert struct.pack(">HII", sender, cluster, inc) + salt == bytes(hdr[10:26])
    sub = run_key(KEY, cluster, sender, inc, salt)
    ct = AESGCM(sub).encrypt(nonce, body, bytes(hdr))
    aes = bytes(hdr) + ct
    ih = bytearray(hdr); ih[6] = 0x80; ih[7] = 0
    ins = bytes(ih) + body + fnv_tag(bytes(ih) + body)
    return sub, aes, ins

def hexs(b):
    return " ".join("%02x" % x for x in b)

def rust(b):
    return ", ".join("0x%02x" % x for x in b)

hb = bytes.fromhex(
    "544e444d02010001" "0020" "0001" "0000beef" "6553f100" "a1a2a3a4a5a6" "000000000007"
    "00002710" "03016402" "0001" "000000000000" "0000000000000005" "000000000000002a")
su = bytes.fromhex(
    "544e444d02020001" "0034" "0002" "0000beef" "6553f101" "b1b2b3b4b5b6" "000102030405"
    "0000000000000009" "01000007" "00020005" "0000000000000011" "0000018bcfe56800" "00000005" "00000000") + b"sess:42hello"
assert len(hb) == 64 and len(su) == 84, (len(hb), len(su))
mode = sys.argv[1] if len(sys.argv) > 1 else "hex"
for name, f in [("heartbeat", hb), ("session-update", su)]:
    sub, aes, ins = seal(f)
    print(name, "run-key", sub.hex())
    for kind, b in [("plain", f), ("sealed", aes), ("insecure", ins)]:
        print(name, kind)
        print(hexs(b) if mode == "hex" else rust(b))
