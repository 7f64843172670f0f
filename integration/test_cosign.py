"""Signatures interoperate with the real cosign (2.5.0, Debian trixie) in both directions."""

import os
import subprocess
import unittest
from pathlib import Path

import harness as h


def cosign(*args, cwd):
    env = dict(os.environ, COSIGN_PASSWORD="thaw-test", COSIGN_YES="true")
    return subprocess.run([h.COSIGN, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


class CosignInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(h.workdir())
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.compiled("auth-filter")
        p = cosign("generate-key-pair", cwd=cls.dir)
        assert p.returncode == 0, p.stderr

    @classmethod
    def tearDownClass(cls):
        h.cleanup(cls.dir)

    def test_cosign_signature_verifies_in_thaw_and_loads_in_envoy(self):
        sig = self.dir / "by-cosign.sig"
        p = cosign("sign-blob", "--key", "cosign.key", "--tlog-upload=false", "--output-signature", sig, self.module, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        v = h.thaw("verify", "--key", self.dir / "cosign.pub", "--signature", sig, self.module, check=False)
        self.assertEqual(v.returncode, 0, v.stderr)
        self.assertIn("Verified OK", v.stdout)
        # The same signature with thaw's own (different) key does not verify.
        v = h.thaw("verify", "--key", self.artifacts.public_key, "--signature", sig, self.module, check=False)
        self.assertNotEqual(v.returncode, 0)
        cfg = {
            "trusted_keys": [str(self.dir / "cosign.pub")],
            "tenant_from": {"header": "x-tenant-id"},
            "tenants": {"acme": {"module": str(self.module), "signature": str(sig), "plugin_config": {"tokens": {}}}},
        }
        ok, output = h.validate(h.envoy_config([h.thaw_filter(cfg)], 1, h.free_port(), h.free_port()), self.dir)
        self.assertTrue(ok, output)

    def test_thaw_signature_verifies_with_cosign(self):
        sig = self.dir / "by-thaw.sig"
        h.thaw("sign", "--key", self.artifacts.private_key, self.module, "-o", sig)
        p = cosign("verify-blob", "--key", self.artifacts.public_key, "--signature", sig, "--insecure-ignore-tlog", self.module, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("Verified OK", p.stderr + p.stdout)
        # cosign refuses it over other bytes.
        other = self.dir / "other.bin"
        other.write_bytes(self.module.read_bytes() + b"x")
        p = cosign("verify-blob", "--key", self.artifacts.public_key, "--signature", sig, "--insecure-ignore-tlog", other, cwd=self.dir)
        self.assertNotEqual(p.returncode, 0)


if __name__ == "__main__":
    unittest.main()
