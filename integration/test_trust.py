"""Trust policies end to end: Sigstore bundles (keyless and key), key rotation windows, required
transparency-log entries, SLSA provenance and `on_artifact_failure: disable_tenant`, in a real Envoy
1.40.0 (`--mode validate` and running), with the `thaw` CLI and the real cosign 2.5.0 as signer and
reference verifier. The Sigstore infrastructure (Fulcio-style CA, rogue CA, TSA, log key) is the test
one of sigstore_fixtures.py, on loopback.

Every refusal is asserted on the exact tenant and reason label thaw gives (`tenant `NAME`` and
`(reason: R)` on one line), and every refusal has an accepted twin that differs in one thing.
"""

import base64
import datetime
import json
import os
import re
import shutil
import time
import unittest
from pathlib import Path

import harness as h
from sigstore_fixtures import Sigstore

COSIGN = os.environ.get("COSIGN_BIN")
IDENTITY = "https://github.com/thaw-test/guests/.github/workflows/release.yml@refs/heads/main"
IDENTITY_REGEX = r"^https://github\.com/thaw-test/guests/\.github/workflows/[a-z]+\.yml@refs/heads/main$"
OTHER_IDENTITY = "https://github.com/mallory/guests/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
OTHER_ISSUER = "https://accounts.google.com"
BUILDER = "https://github.com/thaw-test/guests/.github/workflows/slsa-builder.yml@refs/tags/v1"
OTHER_BUILDER = "https://github.com/mallory/builder/.github/workflows/build.yml@refs/tags/v1"
TOKENS = {"s3cret": "alice"}
DISABLED_BODY = b"thaw: the tenant's filter artifact was refused at load; request denied\n"
REFUSED_GAUGE = "envoy_thaw_wasm_artifact_refused"
DISABLED_COUNTER = "envoy_thaw_wasm_disabled_tenant_request_total"
SIGNATURE_FAILURES = "envoy_thaw_wasm_signature_verification_failure_total"


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@unittest.skipUnless(COSIGN, "COSIGN_BIN is not set: Sigstore trust is tested against the real cosign 2.5.0 "
                             "(set COSIGN_BIN=build/tools/cosign)")
class Trust(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = time.time()
        cls.dir = Path(h.workdir())
        cls.addClassCleanup(h.cleanup, cls.dir)
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.compiled("auth-filter")
        # Other bytes: what a bundle of another file is about.
        cls.other = cls.dir / "other.cwasm"
        cls.other.write_bytes(cls.module.read_bytes() + b"\0")
        cls.sigstore = cls.enterClassContext(Sigstore(cls.dir, COSIGN))
        cls.root = cls.sigstore.write_trusted_root(cls.dir / "trusted_root.json")
        # Just the media type: what cosign needs to verify an untimed key bundle.
        cls.minimal_root = cls.sigstore.write_trusted_root(cls.dir / "minimal_root.json", ca=False, tsa=False, tlog=False)
        # Keyless bundles of the module by the test Fulcio: with an RFC 3161 timestamp, without one,
        # and by another identity.
        cls.keyless = cls.sigstore.sign_keyless(cls.module, cls.dir / "keyless.sigstore.json", IDENTITY, ISSUER)
        cls.keyless_untimed = cls.sigstore.sign_keyless(cls.module, cls.dir / "keyless-untimed.sigstore.json",
                                                        IDENTITY, ISSUER, timestamp=False)
        cls.keyless_mallory = cls.sigstore.sign_keyless(cls.module, cls.dir / "keyless-mallory.sigstore.json",
                                                        OTHER_IDENTITY, ISSUER)
        # cosign key pairs: A is being rotated out, B in; C signs attestations.
        cls.key_a, cls.pub_a = cls.sigstore.make_key_pair(cls.dir, "key-a")
        cls.key_b, cls.pub_b = cls.sigstore.make_key_pair(cls.dir, "key-b")
        cls.key_c, cls.pub_c = cls.sigstore.make_key_pair(cls.dir, "key-c")

    # --- helpers ------------------------------------------------------------------------------

    def out(self, name):
        return self.dir / f"{self.id().rsplit('.', 1)[-1]}-{name}"

    def identity_trust(self, root=None, **rule):
        rule = rule or {"subject": IDENTITY}
        return {"trusted_root": str(root or self.root), "identities": [{"issuer": ISSUER, **rule}]}

    @staticmethod
    def tenant(module, bundle, attestation=None):
        t = {"module": str(module), "bundle": str(bundle), "plugin_config": {"tokens": TOKENS}}
        if attestation is not None:
            t["attestation"] = str(attestation)
        return t

    def filter_config(self, trust, tenants, **extra):
        cfg = {"trust": trust, "tenant_from": {"header": "x-tenant-id"}, "tenants": tenants}
        cfg.update(extra)
        return cfg

    def config(self, trust, bundle, module=None, attestation=None, **extra):
        """An Envoy config with one tenant `acme`: `module` (default the auth filter) and `bundle`."""
        tenants = {"acme": self.tenant(module or self.module, bundle, attestation)}
        return h.envoy_config([h.thaw_filter(self.filter_config(trust, tenants, **extra))], 1, h.free_port(), h.free_port())

    def assert_loads(self, config):
        ok, output = h.validate(config, self.dir)
        self.assertTrue(ok, output)
        self.assertIn("signatures verified", output)
        return output

    def assert_refused(self, config, reason, tenant="acme", *needles):
        """`envoy --mode validate` fails, on a line naming `tenant` and `(reason: reason)` (and
        holding every one of `needles`); returns that line."""
        ok, output = h.validate(config, self.dir)
        self.assertFalse(ok, f"envoy --mode validate accepted a config it must refuse:\n{output}")
        lines = [line for line in output.splitlines() if f"tenant `{tenant}`" in line and "(reason: " in line]
        self.assertTrue(lines, f"no refusal naming tenant `{tenant}`:\n{output}")
        line = lines[0]
        self.assertIn(f"(reason: {reason})", line)
        for needle in needles:
            self.assertIn(str(needle), line)
        return line

    def copy(self, path, name):
        dest = self.out(name)
        shutil.copy(path, dest)
        return dest

    def cli_ok(self, *args):
        p = h.thaw(*args, check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Verified OK", p.stdout)
        return p.stdout

    def cli_refused(self, reason, *args):
        p = h.thaw(*args, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("Verified OK", p.stdout)
        self.assertIn(f"(reason: {reason})", p.stderr)
        return p.stderr

    # --- 1. keyless ---------------------------------------------------------------------------

    def test_keyless_bundle_serves_in_a_running_envoy_and_verifies_in_cosign(self):
        ok, output = self.sigstore.cosign_verify_blob(self.module, self.keyless, self.root, identity=IDENTITY, issuer=ISSUER)
        self.assertTrue(ok, output)
        self.assertIn("Verified OK", output)
        upstream = h.Upstream()
        self.addCleanup(upstream.close)
        cfg = self.filter_config(self.identity_trust(), {"acme": self.tenant(self.module, self.keyless)})
        with h.Envoy([h.thaw_filter(cfg)], upstream, self.dir) as envoy:
            status, _, body = envoy.request("/r", {"x-tenant-id": "acme", "authorization": "Bearer s3cret"})
            self.assertEqual(status, 200, body)
            self.assertEqual(upstream.seen[-1]["headers"]["x-auth-subject"], "alice")
            seen = len(upstream.seen)
            status, _, body = envoy.request("/r", {"x-tenant-id": "acme"})
            self.assertEqual(status, 403)
            self.assertIn(b"missing bearer token", body)
            self.assertEqual(len(upstream.seen), seen)
            self.assertIsNone(envoy.metric(SIGNATURE_FAILURES, "acme") or None)

    def test_keyless_subject_regex(self):
        self.assert_loads(self.config(self.identity_trust(subject_regex=IDENTITY_REGEX), self.keyless))
        # The same rule does not match another repository's workflow.
        self.assert_refused(self.config(self.identity_trust(subject_regex=IDENTITY_REGEX), self.keyless_mallory),
                            "identity", "acme", OTHER_IDENTITY)

    def test_keyless_by_another_identity_is_refused(self):
        self.assert_refused(self.config(self.identity_trust(), self.keyless_mallory), "identity", "acme",
                            str(self.keyless_mallory), OTHER_IDENTITY, "no trust.identities rule allows")

    def test_keyless_from_another_issuer_is_refused(self):
        trust = {"trusted_root": str(self.root), "identities": [{"issuer": OTHER_ISSUER, "subject": IDENTITY}]}
        self.assert_refused(self.config(trust, self.keyless), "identity", "acme", ISSUER, "no trust.identities rule allows")

    def test_keyless_by_a_rogue_ca_is_refused(self):
        self.sigstore.use_rogue_ca = True
        try:
            bundle = self.sigstore.sign_keyless(self.module, self.out("bundle.json"), IDENTITY, ISSUER)
        finally:
            self.sigstore.use_rogue_ca = False
        # Same CA names, same identity, a valid timestamp: only the CA's signature tells it apart.
        self.assert_refused(self.config(self.identity_trust(), bundle), "identity", "acme", str(bundle),
                            "certificate chain")

    def test_keyless_without_a_verified_time_is_refused(self):
        self.assert_refused(self.config(self.identity_trust(), self.keyless_untimed), "signature", "acme",
                            str(self.keyless_untimed), "no signed timestamp or log entry")

    def test_keyless_bundle_of_other_bytes_is_refused(self):
        other_bundle = self.sigstore.sign_keyless(self.other, self.out("other.json"), IDENTITY, ISSUER)
        self.assert_refused(self.config(self.identity_trust(), other_bundle), "digest", "acme", str(other_bundle))
        # The module changed after signing: the good bundle no longer matches it.
        tampered = self.copy(self.module, "tampered.cwasm")
        data = bytearray(tampered.read_bytes())
        data[len(data) // 2] ^= 0x01
        tampered.write_bytes(bytes(data))
        self.assert_refused(self.config(self.identity_trust(), self.keyless, module=tampered), "digest", "acme")

    def test_keyless_under_a_root_without_the_ca_is_refused(self):
        no_ca = self.sigstore.write_trusted_root(self.out("root.json"), ca=False)
        # thaw counts a certificate no trusted CA issued as an identity refusal.
        self.assert_refused(self.config(self.identity_trust(root=no_ca), self.keyless), "identity", "acme",
                            str(self.keyless), "artifact refused", "no trusted certificate authority")

    # --- 2. key rotation ----------------------------------------------------------------------

    def rotation_trust(self):
        now = time.time()
        return {"trusted_root": str(self.root), "keys": [
            {"key": str(self.pub_a), "not_after": rfc3339(now - 3600)},
            {"key": str(self.pub_b), "not_before": rfc3339(now - 3600)},
        ]}

    def test_rotation_signed_now_by_the_retired_key_is_refused(self):
        bundle = self.sigstore.sign_key(self.module, self.key_a, self.out("bundle.json"), timestamp=True)
        self.assert_refused(self.config(self.rotation_trust(), bundle), "rotation_window", "acme",
                            str(self.pub_a), "outside its validity window")

    def test_rotation_signed_now_by_the_new_key_loads(self):
        bundle = self.sigstore.sign_key(self.module, self.key_b, self.out("bundle.json"), timestamp=True)
        self.assert_loads(self.config(self.rotation_trust(), bundle))

    def test_rotation_retired_key_counts_at_its_logged_time(self):
        untimed = self.sigstore.sign_key(self.module, self.key_a, self.out("untimed.json"))
        # With neither timestamp nor log entry there is no time to check A's window against.
        self.assert_refused(self.config(self.rotation_trust(), untimed), "rotation_window", "acme",
                            str(self.pub_a), "needs a verified signing time")
        # Logged 6 h ago, inside A's window: counts after the window ended.
        logged = self.copy(untimed, "logged-6h.json")
        self.sigstore.add_tlog_entry(logged, time.time() - 6 * 3600, public_key=self.pub_a)
        self.assert_loads(self.config(self.rotation_trust(), logged))
        # Logged 30 min ago, after A's window: the log's time is the one checked.
        late = self.copy(untimed, "logged-30m.json")
        self.sigstore.add_tlog_entry(late, time.time() - 1800, public_key=self.pub_a)
        self.assert_refused(self.config(self.rotation_trust(), late), "rotation_window", "acme",
                            "outside its validity window")
        # The same untimed bundle under A without a window: verifies with no time, as cosign does.
        self.assert_loads(self.config({"keys": [{"key": str(self.pub_a)}]}, untimed))

    def test_key_bundles_interoperate_with_cosign(self):
        # thaw sign --bundle -> cosign verify-blob --key, and loads under a key without a window.
        by_thaw = self.out("by-thaw.sigstore.json")
        h.thaw("sign", "--key", self.artifacts.private_key, self.module, "--bundle", by_thaw)
        ok, output = self.sigstore.cosign_verify_blob(self.module, by_thaw, self.minimal_root, key=self.artifacts.public_key)
        self.assertTrue(ok, output)
        self.assertIn("Verified OK", output)
        ok, output = self.sigstore.cosign_verify_blob(self.other, by_thaw, self.minimal_root, key=self.artifacts.public_key)
        self.assertFalse(ok, output)
        self.assert_loads(self.config({"keys": [{"key": str(self.artifacts.public_key)}]}, by_thaw))
        # cosign sign-blob --key (untimed) -> thaw verify --key.
        by_cosign = self.sigstore.sign_key(self.module, self.key_b, self.out("by-cosign.sigstore.json"))
        stdout = self.cli_ok("verify", self.module, "--bundle", by_cosign, "--key", self.pub_b)
        self.assertIn(f"signer: key {self.pub_b}", stdout)
        self.cli_refused("signature", "verify", self.module, "--bundle", by_cosign, "--key", self.pub_a)
        self.cli_refused("digest", "verify", self.other, "--bundle", by_cosign, "--key", self.pub_b)

    # --- 3. transparency log ------------------------------------------------------------------

    def tlog_trust(self):
        return {**self.identity_trust(), "require_transparency_log": True}

    def test_required_log_entry(self):
        logged = self.copy(self.keyless_untimed, "logged.json")
        entry = self.sigstore.add_tlog_entry(logged)
        self.assert_loads(self.config(self.tlog_trust(), logged))
        stdout = self.cli_ok("verify", self.module, "--bundle", logged, "--trusted-root", self.root,
                             "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", ISSUER, "--require-tlog")
        self.assertIn("transparency log: entry verified", stdout)
        # A timestamped bundle is not enough when a log entry is required.
        self.assert_refused(self.config(self.tlog_trust(), self.keyless), "signature", "acme",
                            str(self.keyless), "no transparency-log entry")
        # The entry's integrated time moved by one second: the signed entry timestamp no longer holds.
        tampered = self.copy(logged, "tampered.json")
        bundle = json.loads(tampered.read_text())
        bundle["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = str(int(entry["integratedTime"]) - 1)
        tampered.write_text(json.dumps(bundle))
        self.assert_refused(self.config(self.tlog_trust(), tampered), "signature", "acme", str(tampered))

    # --- 4. provenance ------------------------------------------------------------------------

    def provenance_trust(self):
        return {**self.identity_trust(), "keys": [{"key": str(self.artifacts.public_key)}, {"key": str(self.pub_c)}],
                "provenance": {"builder_ids": [BUILDER]}}

    @classmethod
    def module_bundle(cls):
        """The module's signature (thaw sign --bundle, thaw's key), made once."""
        path = cls.dir / "module.thaw.sigstore.json"
        if not path.exists():
            h.thaw("sign", "--key", cls.artifacts.private_key, cls.module, "--bundle", path)
        return path

    def predicate(self, builder):
        name = "allowed" if builder == BUILDER else "other"
        return Sigstore.slsa_predicate(self.out(f"predicate-{name}.json"), builder)

    def provenance_config(self, attestation):
        return self.config(self.provenance_trust(), self.module_bundle(), attestation=attestation)

    def verify_attestation_args(self, attestation, builder=BUILDER, file=None):
        return ["verify-attestation", file or self.module, "--bundle", attestation, "--key", self.pub_c,
                "--builder-id", builder]

    def test_provenance_by_an_allowed_builder_loads(self):
        by_key = self.sigstore.attest_key(self.module, self.key_c, self.predicate(BUILDER), self.out("key.intoto.json"))
        self.assert_loads(self.provenance_config(by_key))
        stdout = self.cli_ok(*self.verify_attestation_args(by_key))
        self.assertIn(f"SLSA provenance v1 by {BUILDER}", stdout)
        # The same attestation when only another builder is allowed.
        self.cli_refused("provenance", *self.verify_attestation_args(by_key, OTHER_BUILDER))
        keyless = self.sigstore.attest_keyless(self.module, self.predicate(BUILDER), self.out("keyless.intoto.json"),
                                               IDENTITY, ISSUER)
        self.assert_loads(self.provenance_config(keyless))
        self.cli_ok("verify-attestation", self.module, "--bundle", keyless, "--trusted-root", self.root,
                    "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", ISSUER, "--builder-id", BUILDER)
        self.cli_refused("identity", "verify-attestation", self.module, "--bundle", keyless, "--trusted-root", self.root,
                         "--certificate-identity", OTHER_IDENTITY, "--certificate-oidc-issuer", ISSUER, "--builder-id", BUILDER)
        # thaw verify with --attestation checks both.
        stdout = self.cli_ok("verify", self.module, "--bundle", self.module_bundle(), "--key", self.artifacts.public_key,
                             "--key", self.pub_c, "--attestation", by_key, "--builder-id", BUILDER)
        self.assertIn(f"provenance: SLSA v1, builder {BUILDER}", stdout)

    def test_provenance_by_another_builder_is_refused(self):
        attestation = self.sigstore.attest_key(self.module, self.key_c, self.predicate(OTHER_BUILDER), self.out("a.json"))
        self.assert_refused(self.provenance_config(attestation), "provenance", "acme", str(attestation),
                            f"built by `{OTHER_BUILDER}`")
        self.cli_refused("provenance", *self.verify_attestation_args(attestation))
        self.cli_ok(*self.verify_attestation_args(attestation, OTHER_BUILDER))

    def test_provenance_of_another_predicate_type_is_refused(self):
        attestation = self.sigstore.attest_key(self.module, self.key_c, self.predicate(BUILDER), self.out("a.json"),
                                               predicate_type="custom")
        statement = json.loads(base64.b64decode(json.loads(attestation.read_text())["dsseEnvelope"]["payload"]))
        self.assertEqual(statement["predicateType"], "https://cosign.sigstore.dev/attestation/v1")
        self.assert_refused(self.provenance_config(attestation), "provenance", "acme", str(attestation),
                            "https://cosign.sigstore.dev/attestation/v1", "not SLSA provenance v1")
        self.cli_refused("provenance", *self.verify_attestation_args(attestation))
        # cosign 2.5.0 accepts it even when asked for SLSA provenance (GHSA-w6c6-c85g-mmv6): thaw
        # must not rely on cosign's --type.
        ok, output = self.sigstore.cosign_verify_attestation(self.module, attestation, self.minimal_root, key=self.pub_c,
                                                             predicate_type="slsaprovenance1")
        self.assertTrue(ok, output)
        self.assertIn("Verified OK", output)

    def test_provenance_of_another_file_is_refused(self):
        attestation = self.sigstore.attest_key(self.other, self.key_c, self.predicate(BUILDER), self.out("a.json"))
        self.assert_refused(self.provenance_config(attestation), "digest", "acme", str(attestation),
                            "do not include this artifact's sha256")
        self.cli_refused("digest", *self.verify_attestation_args(attestation))
        self.cli_ok(*self.verify_attestation_args(attestation, file=self.other))

    def test_missing_attestation_is_refused(self):
        missing = self.out("missing.intoto.json")
        self.assert_refused(self.provenance_config(missing), "unreadable", "acme", str(missing))

    # --- 5. disable_tenant --------------------------------------------------------------------

    def two_tenants(self, **extra):
        tenants = {"good": self.tenant(self.module, self.keyless), "bad": self.tenant(self.module, self.keyless_mallory)}
        return self.filter_config(self.identity_trust(), tenants, **extra)

    def test_disable_tenant_serves_the_rest_and_counts_the_refusal(self):
        upstream = h.Upstream()
        self.addCleanup(upstream.close)
        cfg = self.two_tenants(on_artifact_failure="disable_tenant")
        with h.Envoy([h.thaw_filter(cfg)], upstream, self.dir) as envoy:
            status, _, _ = envoy.request("/", {"x-tenant-id": "good", "authorization": "Bearer s3cret"})
            self.assertEqual(status, 200)
            seen = len(upstream.seen)
            for n in (1, 2, 3):
                status, _, body = envoy.request("/", {"x-tenant-id": "bad", "authorization": "Bearer s3cret"})
                self.assertEqual((status, body), (503, DISABLED_BODY))
                self.wait_for(envoy, DISABLED_COUNTER, "bad", n)
            self.assertEqual(len(upstream.seen), seen, "a disabled tenant's request reached the upstream")
            self.assertIsNone(envoy.metric(DISABLED_COUNTER, "good") or None)
            stats = envoy.stats()
            refused = self.refused_gauges(stats)
            self.assertGreaterEqual(refused.get(("bad", "identity"), 0), 1, stats)
            self.assertEqual([k for k in refused if k[0] == "good"], [], refused)
            self.assertGreaterEqual(envoy.metric(SIGNATURE_FAILURES, "bad") or 0, 1)
            self.assertIn("tenant `bad`: artifact refused", envoy.output())
            self.assertIn("the tenant is disabled (on_artifact_failure: disable_tenant)", envoy.output())
        # The default (reject_config) refuses the whole config for the same tenant.
        config = h.envoy_config([h.thaw_filter(self.two_tenants())], 1, h.free_port(), h.free_port())
        self.assert_refused(config, "identity", "bad", OTHER_IDENTITY)

    def wait_for(self, envoy, name, tenant, value, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if envoy.metric(name, tenant) == value:
                return
            time.sleep(0.05)
        self.fail(f"{name}{{tenant={tenant}}} is {envoy.metric(name, tenant)}, expected {value}")

    @staticmethod
    def refused_gauges(stats):
        """{(tenant, reason): value} of the artifact_refused gauge, whatever the label order."""
        found = {}
        for line in stats.splitlines():
            if not line.startswith(REFUSED_GAUGE + "{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            found[(labels.get("tenant"), labels.get("reason"))] = float(line.rsplit(" ", 1)[1])
        return found

    # --- 6. inspect ---------------------------------------------------------------------------

    def test_inspect_shows_the_keyless_signer_and_verified_time(self):
        args = ["inspect", self.module, "--bundle", self.keyless, "--trusted-root", self.root,
                "--certificate-oidc-issuer", ISSUER]
        p = h.thaw(*args, "--certificate-identity", IDENTITY, check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"signer: certificate identity {IDENTITY} (issuer {ISSUER})", p.stdout)
        m = re.search(r"^verified time: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", p.stdout, re.M)
        self.assertIsNotNone(m, p.stdout)
        when = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
        self.assertGreaterEqual(when, self.started - 60)
        self.assertLessEqual(when, time.time() + 60)
        self.assertIn("transparency log: no entry", p.stdout)
        self.assertIn("compatible with this host", p.stdout)
        p = h.thaw(*args, "--certificate-identity", OTHER_IDENTITY, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("(reason: identity)", p.stderr)
        self.assertNotIn("signer:", p.stdout)


if __name__ == "__main__":
    unittest.main()
