"""Differential tests with raw-ABI C guests (examples/c): each guest runs under Envoy's own
`envoy.filters.http.wasm` (V8, the reference) and under thaw in one Envoy 1.40.0 process (one
listener each, same upstream), thaw with two tenants of the same artifact, one per isolation mode
(`per_request`, `pooled`). Every request goes to all three; what the client and the upstream see
must be identical.

- `c-auth-abi010`: ABI 0.1.0 (2-argument header callbacks), WASI from `wasi_unstable`, a command
  module (`_start`), `malloc` only.
- `c-auth-abi020`: the same logic on ABI 0.2.0, `wasi_snapshot_preview1`, a reactor
  (`_initialize`), libc's `malloc` only.
- `c-hostile-args`: ABI 0.2.1; calls host functions with hostile arguments and replies with every
  status it got (`name/case=status` lines): the bodies must be equal byte for byte.

The C guests are built by examples/c/build.sh into build/guests (idempotent, offline).
"""

import difflib
import json
import subprocess
import unittest
import uuid
from pathlib import Path

import harness as h
from test_conformance import VOLATILE, two_listener_config, v8_filter

BUILD_SH = h.ROOT / "examples" / "c" / "build.sh"
MODES = ("per_request", "pooled")
# Where the observations of the last run are written, for people reading a failure.
REPORT_DIR = h.ROOT / "build" / "c-guests"


def build_c_guests():
    """examples/c/build.sh into build/guests; returns the error text, or None."""
    p = subprocess.run([str(BUILD_SH), str(h.GUESTS)], capture_output=True, text=True)
    return None if p.returncode == 0 else p.stdout + p.stderr


def thaw_tenants(artifacts, module, guest):
    """The thaw filter: one tenant per isolation mode, both on `module`; the plugin configuration
    names the mode (the auth guests log it from on_configure)."""
    return h.thaw_filter({
        "trusted_keys": [str(artifacts.public_key)],
        "tenant_from": {"header": "x-tenant-id"},
        "tenants": {f"{guest}-{mode}": {"module": str(module), "plugin_config": f"thaw-{mode}", "isolation": mode}
                    for mode in MODES},
    })


def log_lines(text, needles=("[wasm]", "[dynamic_modules]", "thaw", "[error]", "[critical]", "[warning]")):
    """The lines of an Envoy log that matter here: Wasm, thaw, warnings and errors (bounded)."""
    lines = [l for l in text.splitlines() if any(n in l for n in needles)]
    return "\n".join(lines[-60:])


class CGuest(unittest.TestCase):
    """One Envoy with V8 (first listener) and thaw (second listener) for GUEST. When thaw refuses
    the guest (the Envoy does not start), a V8-only Envoy still runs, so the V8 reference checks
    keep running and the thaw checks fail with thaw's reason."""

    GUEST = None

    @classmethod
    def setUpClass(cls):
        if cls.GUEST is None:
            raise unittest.SkipTest("base class")
        cls.dir = h.workdir()
        cls.envoy = None
        cls.thaw_error = None
        cls.v8_error = None
        error = build_c_guests()
        if error:
            raise RuntimeError(f"examples/c/build.sh failed:\n{error}")
        cls.wasm = h.GUESTS / f"{cls.GUEST}.wasm"
        cls.artifacts = h.Artifacts(cls.dir)
        cls.upstream = h.Upstream()
        v8 = v8_filter(cls.wasm, "v8")
        try:
            module = cls.artifacts.signed(cls.GUEST)
        except subprocess.CalledProcessError as e:
            module = None
            cls.thaw_error = f"thaw compile/sign failed: {e.stderr}"
        if module is not None:
            config, cls.v8_port, cls.thaw_port, admin = two_listener_config(
                cls.upstream, v8, thaw_tenants(cls.artifacts, module, cls.GUEST))
            try:
                cls.envoy = h.Envoy(None, cls.upstream, cls.dir, config_text=json.dumps(config), port=cls.v8_port,
                                    admin_port=admin, concurrency=1, log_level="info").__enter__()
            except RuntimeError as e:
                cls.thaw_error = f"Envoy with the thaw listener did not start:\n{log_lines(str(e))}"
        if cls.envoy is None:
            # V8 alone, for the reference observations (and to learn whether V8 loads the guest).
            cls.thaw_port = None
            cls.v8_port, admin = h.free_port(), h.free_port()
            config = h.envoy_config([v8], cls.upstream.port, cls.v8_port, admin)
            try:
                cls.envoy = h.Envoy(None, cls.upstream, cls.dir, config_text=json.dumps(config), port=cls.v8_port,
                                    admin_port=admin, concurrency=1, log_level="info").__enter__()
            except RuntimeError as e:
                cls.v8_error = f"V8 (Envoy's Wasm filter) did not load {cls.GUEST}:\n{log_lines(str(e))}"

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "envoy", None) is not None:
            cls.envoy.__exit__(None, None, None)
            REPORT_DIR.mkdir(parents=True, exist_ok=True)
            (REPORT_DIR / f"{cls.GUEST}-envoy-log.txt").write_text(log_lines(cls.envoy.log_path.read_text()))
        if getattr(cls, "upstream", None) is not None:
            cls.upstream.close()
        if getattr(cls, "dir", None):
            h.cleanup(cls.dir)

    def require_v8(self):
        if self.v8_error:
            self.fail(self.v8_error)

    def require_thaw(self):
        self.require_v8()
        if self.thaw_error:
            self.fail(f"thaw does not run {self.GUEST} (V8 does):\n{self.thaw_error}")

    def observe(self, port, tenant, method, path, headers):
        """One request; what the client and the upstream saw."""
        marker = uuid.uuid4().hex
        conn = h.http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, headers={"x-tenant-id": tenant, "x-c-req": marker, **headers})
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        seen = [s for s in self.upstream.seen if s["headers"].get("x-c-req") == marker]
        return {
            "status": r.status,
            "headers": sorted((k.lower(), v) for k, v in r.getheaders() if k.lower() not in VOLATILE),
            "body": body.decode(errors="replace"),
            "upstream": [sorted((k, v) for k, v in s["headers"].items() if k.startswith("x-c") and k != "x-c-req")
                         for s in seen],
        }

    def comparable(self, observation):
        """An observation as V8 and thaw are compared: empty-valued headers left out (documented
        difference, see harness.without_empty_values)."""
        return {**observation, "upstream": [h.without_empty_values(u) for u in observation["upstream"]]}

    def observe_all(self, method, path, headers):
        """{host: observation} for V8 and each thaw tenant (thaw only if it runs)."""
        out = {"v8": self.observe(self.v8_port, "", method, path, headers)}
        if self.thaw_port:
            for mode in MODES:
                out[f"thaw-{mode}"] = self.observe(self.thaw_port, f"{self.GUEST}-{mode}", method, path, headers)
        return out

    def save(self, name, text):
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / name).write_text(text)


class AuthGuest(CGuest):
    """c-auth-*: `authorization: Bearer c-good` passes with `x-c-auth: ok` and an empty-valued
    `x-c-empty` added; anything else is a local 403 `c-denied`; every response gets
    `x-c-saw-response: 1`."""

    REQUESTS = [
        ("good", {"authorization": "Bearer c-good"}),
        ("bad-token", {"authorization": "Bearer c-bad"}),
        ("missing", {}),
        ("good-again", {"authorization": "Bearer c-good"}),
        ("prefix-only", {"authorization": "Bearer c-goo"}),
        ("good-third", {"authorization": "Bearer c-good"}),
    ]

    def test_v8_reference_behaviour(self):
        """The guest does what it says in the reference host (the comparison has teeth)."""
        self.require_v8()
        good = self.observe(self.v8_port, "", "GET", "/a", {"authorization": "Bearer c-good"})
        self.assertEqual(good["status"], 200, good)
        self.assertEqual(good["upstream"], [[("x-c-auth", "ok"), ("x-c-empty", "")]], good)
        self.assertIn(("x-c-saw-response", "1"), good["headers"], good)
        bad = self.observe(self.v8_port, "", "GET", "/a", {"authorization": "Bearer c-bad"})
        self.save(f"{self.GUEST}-v8-reference.txt", json.dumps({"good": good, "bad": bad}, indent=1))
        self.assertEqual((bad["status"], bad["body"], bad["upstream"]), (403, "c-denied", []), bad)

    def test_thaw_matches_v8_in_both_isolation_modes(self):
        self.require_thaw()
        differences, log = [], []
        for name, headers in self.REQUESTS:
            seen = self.observe_all("GET", f"/{name}", headers)
            log.append(f"{name}: {json.dumps(seen, indent=1)}")
            for host, obs in seen.items():
                if host != "v8" and self.comparable(obs) != self.comparable(seen["v8"]):
                    differences.append(f"{name} ({host}):\n  v8:   {seen['v8']}\n  thaw: {obs}")
        self.save(f"{self.GUEST}-observations.txt", "\n".join(log))
        self.assertEqual(differences, [], "\n".join(differences))

    def test_on_configure_writes_to_stdout_through_wasi_in_both_hosts(self):
        """on_configure writes `<guest> configured: <plugin config>` with WASI fd_write."""
        self.require_v8()
        out = self.envoy.output()
        self.assertIn(f"{self.GUEST} configured: v8", out, log_lines(out))
        self.require_thaw()
        for mode in MODES:
            self.assertIn(f"{self.GUEST} configured: thaw-{mode}", out, log_lines(out))


class AuthAbi010(AuthGuest):
    GUEST = "c-auth-abi010"


class AuthAbi020(AuthGuest):
    GUEST = "c-auth-abi020"


class HostileArgs(CGuest):
    GUEST = "c-hostile-args"
    LAST_LINE_PREFIX = "proxy_send_local_response/headers_oob="

    def reports(self, rounds=2):
        """Each host's reply to `rounds` identical requests."""
        out = []
        for _ in range(rounds):
            out.append(self.observe_all("GET", "/hostile", {"x-hostile": "1"}))
        return out

    def test_v8_reference_report_is_complete(self):
        self.require_v8()
        obs = self.observe(self.v8_port, "", "GET", "/hostile", {"x-hostile": "1"})
        self.save("c-hostile-args-v8.txt", obs["body"])
        self.assertEqual(obs["status"], 200, obs)
        lines = obs["body"].splitlines()
        self.assertTrue(lines and lines[-1].startswith(self.LAST_LINE_PREFIX), obs["body"][-500:])
        self.assertEqual(obs["upstream"], [])

    def test_thaw_report_equals_v8_in_both_isolation_modes(self):
        self.require_thaw()
        differences = []
        for i, seen in enumerate(self.reports()):
            v8 = seen["v8"]
            self.save(f"c-hostile-args-v8-{i}.txt", v8["body"])
            for host, obs in seen.items():
                if host == "v8":
                    continue
                self.save(f"c-hostile-args-{host}-{i}.txt", obs["body"])
                if obs != v8:
                    diff = "\n".join(difflib.unified_diff(v8["body"].splitlines(), obs["body"].splitlines(),
                                                          "v8", host, lineterm="", n=0))
                    rest = {k: (v8[k], obs[k]) for k in ("status", "headers", "upstream") if v8[k] != obs[k]}
                    differences.append(f"request {i} ({host}): {rest}\n{diff}")
        self.assertEqual(differences, [], "\n".join(differences))


if __name__ == "__main__":
    unittest.main()
