"""The Sigstore fixtures (sigstore_fixtures.py) against the real cosign 2.5.0: what they sign verifies
in cosign, and what they make wrong cosign refuses for the expected reason."""

import base64
import json
import os
import time
import unittest
from pathlib import Path

import harness as h
from sigstore_fixtures import Sigstore

COSIGN = os.environ.get("COSIGN_BIN")
IDENTITY = "https://github.com/thaw-test/guests/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
BUILDER = "https://github.com/thaw-test/guests/.github/workflows/slsa-builder.yml@refs/tags/v1"


@unittest.skipUnless(COSIGN, "COSIGN_BIN is not set: the Sigstore fixtures are checked by the real cosign 2.5.0")
class SigstoreFixtures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(h.workdir())
        cls.addClassCleanup(h.cleanup, cls.dir)
        cls.sigstore = cls.enterClassContext(Sigstore(cls.dir, COSIGN))
        cls.root = cls.sigstore.write_trusted_root(cls.dir / "trusted_root.json")
        cls.artifact = cls.dir / "guest.cwasm"
        cls.artifact.write_bytes(b"\0asm thaw test module")
        cls.other = cls.dir / "other.cwasm"
        cls.other.write_bytes(b"\0asm another module")
        cls.key, cls.public_key = cls.sigstore.make_key_pair(cls.dir, "signer")
        _, cls.other_public_key = cls.sigstore.make_key_pair(cls.dir, "other")
        cls.predicate = Sigstore.slsa_predicate(cls.dir / "provenance.json", BUILDER)

    def out(self, name):
        return self.dir / f"{self.id().rsplit('.', 1)[-1]}-{name}.json"

    def verify(self, bundle, file=None, **kwargs):
        return self.sigstore.cosign_verify_blob(file or self.artifact, bundle, self.root, **kwargs)

    def verify_attestation(self, bundle, file=None, **kwargs):
        return self.sigstore.cosign_verify_attestation(file or self.artifact, bundle, self.root, **kwargs)

    def assertVerified(self, result):
        ok, output = result
        self.assertTrue(ok, output)
        self.assertIn("Verified OK", output)

    def assertRefused(self, result, reason):
        ok, output = result
        self.assertFalse(ok, output)
        self.assertIn(reason, output)

    def tampered(self, bundle, change):
        """A copy of `bundle` with `change` applied to its first log entry."""
        data = json.loads(bundle.read_text())
        change(data["verificationMaterial"]["tlogEntries"][0])
        path = bundle.with_name(f"tampered-{bundle.name}")
        path.write_text(json.dumps(data))
        return path

    def test_keyless_bundle_with_timestamp(self):
        bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), IDENTITY, ISSUER)
        material = json.loads(bundle.read_text())["verificationMaterial"]
        self.assertIn("certificate", material)
        self.assertEqual(len(material["timestampVerificationData"]["rfc3161Timestamps"]), 1)
        self.assertVerified(self.verify(bundle, identity=IDENTITY, issuer=ISSUER))
        self.assertVerified(self.verify(bundle, identity_regexp="^https://github.com/thaw-test/", issuer=ISSUER))
        self.assertRefused(self.verify(bundle, identity=IDENTITY + "x", issuer=ISSUER), "expected SAN value")
        self.assertRefused(self.verify(bundle, identity=IDENTITY, issuer="https://accounts.google.com"),
                           "expected issuer value")
        self.assertRefused(self.verify(bundle, self.other, identity=IDENTITY, issuer=ISSUER), "invalid signature")
        # Without the TSA in the trusted root, the timestamp is not trusted.
        no_tsa = self.sigstore.write_trusted_root(self.out("root-without-tsa"), tsa=False)
        ok, output = self.sigstore.cosign_verify_blob(self.artifact, bundle, no_tsa, identity=IDENTITY, issuer=ISSUER)
        self.assertFalse(ok, output)
        self.assertIn("threshold not met for verified signed timestamps", output)

    def test_email_identity(self):
        bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), "dev@thaw.test", "https://accounts.google.com")
        self.assertVerified(self.verify(bundle, identity="dev@thaw.test", issuer="https://accounts.google.com"))

    def test_rogue_ca_is_refused(self):
        self.sigstore.use_rogue_ca = True
        try:
            bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), IDENTITY, ISSUER)
        finally:
            self.sigstore.use_rogue_ca = False
        self.assertRefused(self.verify(bundle, identity=IDENTITY, issuer=ISSUER), "leaf certificate verification failed")

    def test_key_bundle(self):
        bundle = self.sigstore.sign_key(self.artifact, self.key, self.out("bundle"))
        self.assertIn("publicKey", json.loads(bundle.read_text())["verificationMaterial"])
        self.assertVerified(self.verify(bundle, key=self.public_key))
        self.assertRefused(self.verify(bundle, key=self.other_public_key), "invalid signature")
        self.assertRefused(self.verify(bundle, self.other, key=self.public_key), "invalid signature")

    def test_key_bundle_with_timestamp(self):
        bundle = self.sigstore.sign_key(self.artifact, self.key, self.out("bundle"), timestamp=True)
        self.assertVerified(self.verify(bundle, key=self.public_key))

    def test_keyless_bundle_with_log_entry(self):
        bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), IDENTITY, ISSUER, timestamp=False)
        self.assertRefused(self.verify(bundle, identity=IDENTITY, issuer=ISSUER, tlog=True),
                           "not enough verified log entries")
        entry = self.sigstore.add_tlog_entry(bundle)
        self.assertEqual(entry["kindVersion"], {"kind": "hashedrekord", "version": "0.0.1"})
        self.assertVerified(self.verify(bundle, identity=IDENTITY, issuer=ISSUER, tlog=True))
        self.assertRefused(self.verify(bundle, self.other, identity=IDENTITY, issuer=ISSUER, tlog=True),
                           "invalid signature")

        def earlier(e):
            e["integratedTime"] = str(int(e["integratedTime"]) - 1)

        self.assertRefused(self.verify(self.tampered(bundle, earlier), identity=IDENTITY, issuer=ISSUER, tlog=True),
                           "not enough verified log entries")

        def wrong_path(e):
            node = bytearray(base64.b64decode(e["inclusionProof"]["hashes"][1]))
            node[0] ^= 1
            e["inclusionProof"]["hashes"][1] = base64.b64encode(node).decode()

        self.assertRefused(self.verify(self.tampered(bundle, wrong_path), identity=IDENTITY, issuer=ISSUER, tlog=True),
                           "does not match expected root")

    def test_log_entry_outside_certificate_validity(self):
        bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), IDENTITY, ISSUER, timestamp=False)
        self.sigstore.add_tlog_entry(bundle, time.time() - 3600)
        self.assertRefused(self.verify(bundle, identity=IDENTITY, issuer=ISSUER, tlog=True),
                           "integrated time outside certificate validity")

    def test_expired_certificate_verifies_at_its_log_time(self):
        self.sigstore.leaf_validity = (-1200, -600)
        try:
            bundle = self.sigstore.sign_keyless(self.artifact, self.out("bundle"), IDENTITY, ISSUER, timestamp=False)
        finally:
            self.sigstore.leaf_validity = (0, 600)
        self.assertRefused(self.verify(bundle, identity=IDENTITY, issuer=ISSUER), "leaf certificate verification failed")
        self.sigstore.add_tlog_entry(bundle, time.time() - 900)
        self.assertVerified(self.verify(bundle, identity=IDENTITY, issuer=ISSUER, tlog=True))

    def test_key_bundle_with_log_entry(self):
        bundle = self.sigstore.sign_key(self.artifact, self.key, self.out("bundle"))
        with self.assertRaises(ValueError):
            self.sigstore.add_tlog_entry(bundle)
        self.sigstore.add_tlog_entry(bundle, public_key=self.public_key)
        self.assertVerified(self.verify(bundle, key=self.public_key, tlog=True))

    def test_key_attestation(self):
        bundle = self.sigstore.attest_key(self.artifact, self.key, self.predicate, self.out("bundle"))
        envelope = json.loads(bundle.read_text())["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"]))
        self.assertEqual(envelope["payloadType"], "application/vnd.in-toto+json")
        self.assertEqual(statement["predicateType"], "https://slsa.dev/provenance/v1")
        self.assertEqual(statement["predicate"]["runDetails"]["builder"]["id"], BUILDER)
        self.assertVerified(self.verify_attestation(bundle, key=self.public_key))
        self.assertRefused(self.verify_attestation(bundle, key=self.other_public_key), "accepted signatures do not match")
        self.assertRefused(self.verify_attestation(bundle, self.other, key=self.public_key),
                           "provided artifact digest does not match")

    def test_keyless_attestation(self):
        bundle = self.sigstore.attest_keyless(self.artifact, self.predicate, self.out("bundle"), IDENTITY, ISSUER)
        self.assertVerified(self.verify_attestation(bundle, identity=IDENTITY, issuer=ISSUER))
        self.assertRefused(self.verify_attestation(bundle, identity=IDENTITY + "x", issuer=ISSUER), "expected SAN value")
        self.assertRefused(self.verify_attestation(bundle, self.other, identity=IDENTITY, issuer=ISSUER),
                           "provided artifact digest does not match")

    def test_other_predicate_type(self):
        bundle = self.sigstore.attest_key(self.artifact, self.key, self.predicate, self.out("bundle"),
                                          predicate_type="https://thaw.test/not-provenance/v1")
        statement = json.loads(base64.b64decode(json.loads(bundle.read_text())["dsseEnvelope"]["payload"]))
        self.assertEqual(statement["predicateType"], "https://thaw.test/not-provenance/v1")
        # cosign 2.5.0 does not compare --type with a bundle's statement: a verifier must.
        self.assertVerified(self.verify_attestation(bundle, key=self.public_key, predicate_type="slsaprovenance1"))

    def test_attestations_with_log_entries(self):
        for kind, version in (("dsse", "0.0.1"), ("intoto", "0.0.2")):
            with self.subTest(kind=kind):
                keyless = self.sigstore.attest_keyless(self.artifact, self.predicate, self.out(f"{kind}-keyless"),
                                                       IDENTITY, ISSUER, timestamp=False)
                entry = self.sigstore.add_tlog_entry(keyless, kind=kind)
                self.assertEqual(entry["kindVersion"], {"kind": kind, "version": version})
                self.assertVerified(self.verify_attestation(keyless, identity=IDENTITY, issuer=ISSUER, tlog=True))
                keyed = self.sigstore.attest_key(self.artifact, self.key, self.predicate, self.out(f"{kind}-key"))
                self.sigstore.add_tlog_entry(keyed, public_key=self.public_key, kind=kind)
                self.assertVerified(self.verify_attestation(keyed, key=self.public_key, tlog=True))


if __name__ == "__main__":
    unittest.main()
