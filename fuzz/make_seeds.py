#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/ (run from anywhere; idempotent).

Seeds are small valid-ish inputs per target so a smoke run of a few thousand executions already
reaches past the parsers' first checks: real filter configs, maps, hostcall scripts calling every
host function once (with in-bounds slots, data pointers and words), Sigstore bundles and trusted
roots from the sigstore-rs crates' test data (Apache-2.0, copied from the cargo registry), the
fuzz-only key's genuine bundle over `thaw_fuzz::ARTIFACT`. Crash inputs a fuzzer found are added
to these directories by hand (named `crash-*`), so every smoke run replays them.
"""
import base64, glob, hashlib, json, os, struct, subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- config: the README's shapes, a per-route config
put("config", "keys", '{"trusted_keys":["/k.pub"],"tenant_from":{"header":"X-Tenant-Id"},'
    '"tenants":{"acme":{"module":"/a.cwasm","plugin_config":{"tokens":{"t":"alice"}}}}}')
put("config", "full", json.dumps({
    "trust": {"trusted_root": "/r.json", "keys": [{"key": "/a.pub", "not_before": "2026-01-01T00:00:00Z",
              "not_after": "2027-01-31T00:00:00Z"}], "identities": [{"issuer": "https://iss", "subject_regex": "^https://ci/"}],
              "require_transparency_log": True, "provenance": {"builder_ids": ["https://builder"]}},
    "on_artifact_failure": "disable_tenant", "tenant_from": {"route": True}, "unknown_tenant": "allow", "on_error": "allow",
    "allow_jit": False, "memory_budget_mb": 512, "max_live_instances": 64,
    "crash_loop": {"failures": 3, "window_ms": 1000, "quarantine_ms": 0},
    "snapshots": {"dir": "/s", "key": "/k", "encrypt": True, "signed": False},
    "tenants": {"a.b-c_d": {"module": "/a.cwasm", "bundle": "/a.bundle", "attestation": "/a.att", "vm_config": "vm",
                "root_id": "r", "isolation": "pooled", "max_requests": 5, "max_age_ms": 6, "idle_timeout_ms": 7,
                "max_instances": 8, "call_deadline_ms": 9, "memory_limit_mb": 10,
                "snapshot": {"source": "/a.wasm", "bundle": "/s.bundle", "attestation": "/s.att"}}}}))
put("config", "route", '{"tenant":"acme"}')

# ---- header_map: the codec's own encoding of a few maps
def enc(pairs):
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v))
    for k, v in pairs:
        out += k + b"\0" + v + b"\0"
    return out

put("header_map", "empty", enc([]))
put("header_map", "request", enc([(b":method", b"GET"), (b":path", b"/"), (b"x", b"")]))
put("header_map", "split", b":path\xff/\xffx-tenant\xffacme")

# ---- snapshot: one seed per mode (0 raw, 1 mutate, 2 binding, 3 key)
put("snapshot", "raw", b"\x00THAWSNAP\x10\x00\x00\x00{\"format\":1}" + b"\0" * 32)
put("snapshot", "mutate", b"\x01\x00" + struct.pack("<IB", 20, 1))
put("snapshot", "binding", b"\x02fuzz|sha256:00|00|00")
put("snapshot", "key", b"\x03" + b"thaw fuzz snapshot secret, 32+ bytes long")

# ---- sigstore_bundle and trusted_root: sigstore-rs test data, and the fuzz key's own bundle
registry = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
def crate_files(crate, pattern):
    for r in registry:
        yield from sorted(glob.glob(os.path.join(r, crate, pattern), recursive=True))

for i, path in enumerate(list(crate_files("sigstore-bundle-0.15.1", "tests/fixtures/*.json"))
                         + list(crate_files("sigstore-verify-0.15.1", "test_data/**/*bundle*.json"))[:8]):
    data = open(path, "rb").read()
    put("sigstore_bundle", f"bundle-{i}", b"\x00" + data)
    put("sigstore_bundle", f"keyless-{i}", b"\x01" + data)
    if b"dsseEnvelope" in data:
        put("sigstore_bundle", f"provenance-{i}", b"\x06" + data)
for i, path in enumerate(list(crate_files("sigstore-trust-root-0.15.1", "src/*.json"))
                         + list(crate_files("sigstore-verify-0.15.1", "test_data/**/*trusted_root*.json"))[:6]):
    put("trusted_root", f"root-{i}", open(path, "rb").read())
put("trusted_root", "empty", '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}')

artifact = b"thaw fuzz artifact\n"
key = os.path.join(HERE, "fixtures", "fuzz-only.key.pem")
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=artifact, capture_output=True, check=True).stdout
der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
b64 = lambda b: base64.b64encode(b).decode()
bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
          "verificationMaterial": {"publicKey": {"hint": b64(hashlib.sha256(der).digest())}},
          "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(artifact).digest())},
                               "signature": b64(sig)}}
put("sigstore_bundle", "genuine-key-bundle", b"\x00" + json.dumps(bundle).encode())
put("sigstore_bundle", "genuine-detached", b"\x02" + b64(sig).encode())

# ---- artifact: tiny real shapes (the smoke run adds the build's real .wasm/.cwasm files)
put("artifact", "wasm", b"\0asm\x01\0\0\0")
put("artifact", "elf", b"\x7fELF\x02\x01\x01" + b"\0" * 57)

# ---- hostcalls: two control bytes, then a script calling each host function once.
# ARG tags: 0 u8, 1 u32, 2 data+u16, 3 slot, 4 OOB, 5 end-straddle, 6 LEN, 7 slot value.
NARGS = [3, 1, 1, 1, 5, 3, 2, 3, 3, 5, 5, 5, 3, 8, 1, 4, 1, 1, 2, 5, 1, 1, 3, 0, 2, 1, 2, 0, 0, 0,
         10, 12, 9, 4, 1, 1, 4, 4, 5, 5, 3, 5, 3, 3, 6, 2, 3, 4, 4, 3, 1, 2, 2, 3, 7, 2, 2, 2, 2, 2]
WIDE = {16: [1], 17: [1], 49: [1], 54: [5, 6], 55: [1]}
u8 = lambda v: bytes([0, v])
slot = lambda k: bytes([3, k])
data = lambda off: bytes([2]) + struct.pack("<H", off)
LEN = bytes([6])
def word(off, w): return bytes([3]) + struct.pack("<HB", off, w)
def call(f, args):
    out = bytes([2, f])
    for k, a in enumerate(args):
        for _ in WIDE.get(f, []) and [w for w in WIDE[f] if w == k]:
            out += struct.pack("<q", 1)
        out += a
    if f in WIDE and WIDE[f] == [NARGS[f]]:
        out += struct.pack("<q", 5)
    return out

END = b"\x00\x00"
seeds = []
for f, n in enumerate(NARGS):
    # numbers small, pointers into the data area, out-pointers distinct slots
    args = [u8(1)] + [slot(2 * k) if k % 2 else data(16 * k) for k in range(1, n)] if n else []
    seeds.append((f"call-{f}", word(0, 0) + call(f, args) + END))
# a realistic request: read :path, all pairs, a property, add a header, call out, reply
script = (word(0, 0) + call(9, [u8(0), data(0), LEN, slot(0), slot(1)])
          + call(7, [u8(0), slot(2), slot(3)])
          + word(64, 12) + call(36, [data(64), LEN, slot(4), slot(5)])
          + bytes([4]) + struct.pack("<BH", 1, 256) + bytes([5, 1]) + b":path\0" + b"/\0"
          + word(128, 9) + call(30, [data(128), LEN, data(256), bytes([1]) + struct.pack("<I", 22), u8(0), u8(0), u8(0), u8(0), u8(100), slot(6)])
          + bytes([5]) + struct.pack("<H", 3) + END
          + call(13, [bytes([1]) + struct.pack("<I", 403), data(0), u8(4), data(0), u8(4), u8(0), u8(0), u8(0)]) + END)
seeds.append(("request", script))
for name, s in seeds:
    for control in (0x0000, 0x01fd):
        put("hostcalls", f"{name}-{control:04x}", struct.pack("<H", control) + s)
print("seeds written under", CORPUS)
