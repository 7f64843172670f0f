"""The aarch64 artifact, pulled from a real registry, loads and runs on aarch64: the thaw CLI
cross-built for aarch64 (`./bazel-free-build.sh aarch64`, which `test` runs first and which sets
THAW_AARCH64_BIN) runs under qemu-user, pulls its own platform from the index `thaw push` published
on x86_64, verifies it and dry-runs requests through it (`thaw check`, the filter's own load path).
"""

import os
import shutil
import subprocess
import unittest

from test_oci import OciBase

ARM_THAW = os.environ.get("THAW_AARCH64_BIN")
QEMU = shutil.which("qemu-aarch64-static")
TOKENS = '{"tokens": {"t0k3n": "alice"}}'


@unittest.skipUnless(ARM_THAW and QEMU, "needs THAW_AARCH64_BIN and qemu-aarch64-static (./bazel-free-build.sh aarch64)")
class PulledOnAarch64Test(OciBase):
    def on_arm(self, *args, check=True):
        p = subprocess.run([QEMU, "-L", "/usr/aarch64-linux-gnu", ARM_THAW, *map(str, args)], capture_output=True,
                           text=True, timeout=300, env=self.registry.env())
        if check and p.returncode != 0:
            raise AssertionError(f"aarch64 thaw {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}")
        return p

    def test_the_aarch64_cli_pulls_its_platform_and_runs_it(self):
        ref, digest = self.push("tenants/arm")
        out = self.fresh_dir("arm-pulled")
        # No --platform: the aarch64 CLI picks linux/arm64 itself.
        p = self.on_arm("pull", ref, "-o", out, "--key", self.artifacts.public_key)
        self.assertTrue(p.stdout.startswith(digest), p.stdout)
        cwasm, sig = out / "auth-filter.cwasm", out / "auth-filter.cwasm.sig"
        self.assertIn("target: aarch64", self.thaw("inspect", cwasm).stdout)
        check = ["check", cwasm, "--signature", sig, "--key", self.artifacts.public_key, "--plugin-config", TOKENS]
        allowed = self.on_arm(*check, "--header", "authorization: Bearer t0k3n", "--header", "x-auth-subject: mallory",
                              "--expect", "continue").stdout
        self.assertIn("on aarch64", allowed)
        self.assertIn("x-auth-subject: alice", allowed)
        self.assertNotIn("mallory", allowed)
        denied = self.on_arm(*check, "--header", "authorization: Bearer wrong", "--expect", "403").stdout
        self.assertIn("unknown bearer token", denied)

    def test_the_x86_64_artifact_is_refused_on_aarch64(self):
        ref, _ = self.push("tenants/arm-wrong")
        out = self.fresh_dir("amd64-for-arm")
        self.pull(ref, out, "--platform", "linux/amd64")
        p = self.on_arm("check", out / "auth-filter.cwasm", "--signature", out / "auth-filter.cwasm.sig",
                        "--key", self.artifacts.public_key, "--plugin-config", TOKENS, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("wrong architecture", p.stderr)


if __name__ == "__main__":
    unittest.main()
