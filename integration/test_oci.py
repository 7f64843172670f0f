"""Filters through a real OCI registry: `thaw push` / `thaw pull` / `thaw inspect REF` against CNCF
distribution 2.8, with and without basic auth, interoperating with the real oras 1.2.0 and cosign
2.5.0, and refusing tampered, mislabelled, incomplete and unsigned artifacts with nothing written.
"""

import hashlib
import json
import os
import subprocess
import unittest
from pathlib import Path

from harness import GUESTS, THAW, Artifacts, cleanup, workdir
from registry import COSIGN, ORAS, REGISTRY_BIN, Registry

CWASM = "application/vnd.thaw.cwasm.v1"
SIGNATURE = "application/vnd.thaw.signature.v1+base64"
FILTER_CONFIG = "application/vnd.thaw.filter.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HOST_PLATFORM = "linux/amd64"


def have_tools():
    return all(os.access(p, os.X_OK) for p in (REGISTRY_BIN, ORAS, COSIGN))


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@unittest.skipUnless(have_tools(), "needs docker-registry, oras and cosign (./bazel-free-build.sh deps installs them)")
class OciBase(unittest.TestCase):
    auth = None

    @classmethod
    def setUpClass(cls):
        cls.work = Path(workdir())
        cls.artifacts = Artifacts(cls.work)
        user, password = cls.auth or (None, None)
        cls.registry = Registry(cls.work, user, password)
        cls.wasm = GUESTS / "auth-filter.wasm"

    @classmethod
    def tearDownClass(cls):
        cls.registry.stop()
        cleanup(cls.work)

    def thaw(self, *args, env=None, check=True):
        p = subprocess.run([str(THAW), *map(str, args)], capture_output=True, text=True, timeout=300,
                           env=env or self.registry.env())
        if check and p.returncode != 0:
            raise AssertionError(f"thaw {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}")
        return p

    def push(self, repository, tag="1.0", key=None):
        ref = self.registry.ref(repository, tag)
        out = self.thaw("push", ref, self.wasm, "--key", key or self.artifacts.private_key).stdout.strip()
        self.assertTrue(out.startswith(f"{self.registry.host}/{repository}:{tag}@sha256:"), out)
        return ref, out.rsplit("@", 1)[1]

    def pull(self, ref, out, *extra, key=None, check=True):
        return self.thaw("pull", ref, "-o", out, "--key", key or self.artifacts.public_key, *extra, check=check)

    def assert_refused(self, ref, out, *extra, message, key=None):
        p = self.pull(ref, out, *extra, key=key, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(message, p.stderr)
        written = list(out.iterdir()) if out.exists() else []
        self.assertEqual(written, [], f"something was written into {out}")
        return p.stderr

    def fresh_dir(self, name):
        d = self.work / name
        assert not d.exists()
        return d


class PushPullTest(OciBase):
    def test_push_publishes_an_index_of_both_architectures_and_the_wasm_that_pull_verifies_and_writes(self):
        ref, digest = self.push("tenants/auth")
        listing = self.thaw("inspect", ref).stdout
        for platform in ("linux/amd64", "linux/arm64", "wasip1/wasm"):
            self.assertIn(platform, listing)
        self.assertIn(digest, listing)

        out = self.fresh_dir("pulled-host")
        self.pull(ref, out)
        cwasm, sig = out / "auth-filter.cwasm", out / "auth-filter.cwasm.sig"
        self.assertEqual(sorted(p.name for p in out.iterdir()), ["auth-filter.cwasm", "auth-filter.cwasm.sig"])
        verified = self.thaw("verify", cwasm, "--signature", sig, "--key", self.artifacts.public_key).stdout
        self.assertIn("Verified OK", verified)
        info = self.thaw("inspect", cwasm, "--signature", sig, "--key", self.artifacts.public_key).stdout
        self.assertIn("target: x86_64", info)
        self.assertIn("compatible with this host (x86_64", info)
        self.assertIn("proxy_on_request_headers", info)

        arm = self.fresh_dir("pulled-arm64")
        self.pull(ref, arm, "--platform", "linux/arm64")
        info = self.thaw("inspect", arm / "auth-filter.cwasm").stdout
        self.assertIn("target: aarch64", info)
        self.assertNotEqual((arm / "auth-filter.cwasm").read_bytes(), cwasm.read_bytes())

        portable = self.fresh_dir("pulled-wasm")
        self.pull(ref, portable, "--platform", "wasip1/wasm")
        self.assertEqual((portable / "auth-filter.wasm").read_bytes(), self.wasm.read_bytes())
        self.thaw("verify", portable / "auth-filter.wasm", "--signature", portable / "auth-filter.wasm.sig",
                  "--key", self.artifacts.public_key)

    def test_a_reference_by_digest_is_honoured_exactly(self):
        ref, digest = self.push("tenants/pinned", "1.0")
        self.push("tenants/pinned", "1.0", key=self.artifacts.other_private_key)  # the tag moves on
        by_digest = f"{self.registry.host}/tenants/pinned@{digest}"
        out = self.fresh_dir("by-digest")
        p = self.pull(by_digest, out)
        self.assertTrue(p.stdout.startswith(digest), p.stdout)
        # The tag now names an index signed by another key: refused under this trust.
        self.assert_refused(ref, self.fresh_dir("by-tag"), message="refusing an unverified artifact")
        missing = f"{self.registry.host}/tenants/pinned@sha256:{'0' * 64}"
        self.assert_refused(missing, self.fresh_dir("by-missing-digest"), message="not found")

    def test_pulling_again_leaves_identical_files_alone(self):
        ref, _ = self.push("tenants/again")
        out = self.fresh_dir("again")
        self.pull(ref, out)
        before = (out / "auth-filter.cwasm").stat().st_mtime_ns
        p = self.pull(ref, out)
        self.assertIn("up to date", p.stderr)
        self.assertEqual((out / "auth-filter.cwasm").stat().st_mtime_ns, before)

    def test_cosign_verifies_the_signatures_thaw_attached(self):
        ref, digest = self.push("tenants/cosigned")
        repo = ref.rsplit(":", 1)[0]
        p = self.registry.cosign("verify", "--key", self.artifacts.public_key, "--insecure-ignore-tlog=true",
                                 "--offline=true", "--allow-http-registry", f"{repo}@{digest}")
        claims = json.loads(p.stdout)
        self.assertEqual(claims[0]["critical"]["image"]["docker-manifest-digest"], digest)
        # Each platform manifest is signed too.
        index = json.loads(self.registry.oras("manifest", "fetch", ref).stdout)
        for m in index["manifests"]:
            self.registry.cosign("verify", "--key", self.artifacts.public_key, "--insecure-ignore-tlog=true",
                                 "--offline=true", "--allow-http-registry", f"{repo}@{m['digest']}")
        other = self.registry.cosign("verify", "--key", self.work / "other.pub.pem", "--insecure-ignore-tlog=true",
                                     "--offline=true", "--allow-http-registry", f"{repo}@{digest}", check=False)
        self.assertNotEqual(other.returncode, 0)

    def test_oras_lists_and_pulls_what_thaw_pushed(self):
        ref, digest = self.push("tenants/for-oras")
        index = json.loads(self.registry.oras("manifest", "fetch", ref).stdout)
        self.assertEqual(index["mediaType"], INDEX)
        self.assertEqual(sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]),
                         ["linux/amd64", "linux/arm64", "wasip1/wasm"])
        out = self.work / "oras-arm64"
        self.registry.oras("pull", "--platform", "linux/arm64", ref, "-o", out)
        thaw_out = self.fresh_dir("thaw-arm64")
        self.pull(ref, thaw_out, "--platform", "linux/arm64")
        for name in ("auth-filter.cwasm", "auth-filter.cwasm.sig"):
            self.assertEqual((out / name).read_bytes(), (thaw_out / name).read_bytes(), name)

    def test_an_index_oras_pushed_and_cosign_signed_is_taken_by_thaw_pull(self):
        cosign_key, cosign_pub = self.registry.cosign_key_pair("interop")
        d = self.work / "oras-made"
        d.mkdir()
        cwasm = self.artifacts.compiled("auth-filter", name="oras-made/auth")
        # The artifact's own signature, by cosign sign-blob with the cosign key.
        self.registry.cosign("sign-blob", "--key", cosign_key, "--tlog-upload=false",
                             "--output-signature", d / "auth.cwasm.sig", cwasm)
        (d / "config.json").write_text(json.dumps({"target": "x86_64-unknown-linux-gnu"}))
        repo = f"{self.registry.host}/tenants/oras-made"
        self.registry.oras("push", f"{repo}:amd64", "--config", f"config.json:{FILTER_CONFIG}",
                           f"auth.cwasm:{CWASM}", f"auth.cwasm.sig:{SIGNATURE}", cwd=d)
        fetched = self.registry.oras("manifest", "fetch", f"{repo}:amd64").stdout.encode()
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {"mediaType": MANIFEST, "digest": sha256(fetched), "size": len(fetched),
             "platform": {"os": "linux", "architecture": "amd64"}}]}
        (d / "index.json").write_text(json.dumps(index))
        self.registry.oras("manifest", "push", f"{repo}:1.0", d / "index.json", "--media-type", INDEX)

        out = self.fresh_dir("oras-made-unsigned")
        self.assert_refused(f"{repo}:1.0", out, key=cosign_pub, message="unsigned")
        index_digest = sha256((d / "index.json").read_bytes())
        self.registry.cosign("sign", "--key", cosign_key, "--tlog-upload=false", "--allow-http-registry",
                             f"{repo}@{index_digest}")
        out = self.fresh_dir("oras-made-pulled")
        p = self.pull(f"{repo}:1.0", out, key=cosign_pub)
        self.assertTrue(p.stdout.startswith(index_digest), p.stdout)
        self.assertEqual((out / "auth.cwasm").read_bytes(), cwasm.read_bytes())
        # Signed by cosign, not by thaw's trusted key: refused under that trust.
        self.assert_refused(f"{repo}:1.0", self.fresh_dir("oras-made-other-key"), message="verifies under the trust")


class ProvenanceTest(OciBase):
    def attest(self, ref, digest, key, builder):
        """A SLSA v1 provenance attestation of `digest`, attached by the real cosign as a Sigstore
        bundle referrer (`cosign attest --new-bundle-format`)."""
        predicate = self.work / f"predicate-{digest[7:19]}.json"
        predicate.write_text(json.dumps({"buildDefinition": {"buildType": "https://thaw.test/build", "externalParameters": {}},
                                         "runDetails": {"builder": {"id": builder}}}))
        repo = ref.rsplit(":", 1)[0]
        self.registry.cosign("attest", "--key", key, "--tlog-upload=false", "--allow-http-registry", "--new-bundle-format",
                             "--type", "slsaprovenance1", "--predicate", predicate, f"{repo}@{digest}")

    def test_pull_requires_a_provenance_attestation_by_an_allowed_builder_when_asked(self):
        cosign_key, cosign_pub = self.registry.cosign_key_pair("builder")
        ref, digest = self.push("tenants/attested")
        keys = ["--key", self.artifacts.public_key, "--key", cosign_pub]
        builder = "https://ci.thaw.test/builder"
        # No attestation yet: refused when provenance is required, taken when it is not.
        self.assert_refused(ref, self.fresh_dir("not-attested"), *keys[2:], "--builder-id", builder,
                            message="no provenance attestation is attached")
        self.attest(ref, digest, cosign_key, builder)
        out = self.fresh_dir("attested")
        p = self.pull(ref, out, *keys[2:], "--builder-id", builder)
        self.assertIn(f"built by {builder}", p.stderr)
        self.assertTrue((out / "auth-filter.cwasm").is_file())
        self.assert_refused(ref, self.fresh_dir("other-builder"), *keys[2:], "--builder-id", "https://evil.test/builder",
                            message="not an allowed builder")
        # An attestation by a key outside the trust does not count.
        self.assert_refused(ref, self.fresh_dir("untrusted-attestation"), "--builder-id", builder,
                            message="no provenance attestation verifies")


class SnapshotShippedTest(OciBase):
    def test_a_build_time_snapshot_travels_with_its_platform_and_envoy_resumes_it(self):
        import harness as h
        config = {"entries": 100000, "marker": "oci"}
        seal = self.work / "seal.key"
        seal.write_bytes(bytes(range(32)))
        (self.work / "heavy-config.json").write_text(json.dumps(config, separators=(",", ":")))
        built = self.work / "built-snapshots"
        self.thaw("snapshot", GUESTS / "heavy-init-filter.wasm", "--tenant", "heavy", "--plugin-config",
                  self.work / "heavy-config.json", "--seal-key", seal, "--snapshot-dir", built)
        ref = self.registry.ref("tenants/heavy")
        self.thaw("push", ref, GUESTS / "heavy-init-filter.wasm", "--key", self.artifacts.private_key,
                  "--snapshot", f"linux/amd64={built / 'heavy' / 'snapshot.thaw'}")
        self.assertIn("application/vnd.thaw.snapshot.v1", self.thaw("inspect", ref).stdout)
        snapshots = self.work / "pulled-snapshots"
        self.pull(ref, snapshots / "heavy")
        self.assertEqual(sorted(p.name for p in (snapshots / "heavy").iterdir()),
                         ["heavy-init-filter.cwasm", "heavy-init-filter.cwasm.sig", "snapshot.thaw", "snapshot.thaw.sig"])
        source = self.fresh_dir("heavy-source")
        self.pull(ref, source, "--platform", "wasip1/wasm")
        # Under another key nothing verifies: refused, nothing written.
        self.assert_refused(ref, self.fresh_dir("heavy-other"), key=self.work / "other.pub.pem", message="unverified")
        tenant = {"module": str(snapshots / "heavy" / "heavy-init-filter.cwasm"), "plugin_config": config,
                  "call_deadline_ms": 2000, "snapshot": {"source": str(source / "heavy-init-filter.wasm")}}
        filter_config = {"trusted_keys": [str(self.artifacts.public_key)], "tenant_from": {"header": "x-tenant-id"},
                         "snapshots": {"dir": str(snapshots), "key": str(seal), "signed": True}, "tenants": {"heavy": tenant}}
        upstream = h.Upstream()
        try:
            with h.Envoy([h.thaw_filter(filter_config)], upstream, self.work, concurrency=1) as envoy:
                status, _, body = envoy.request("/", {"x-tenant-id": "heavy"})
                self.assertEqual(status, 200, body)
                self.assertIn(b"entries=100000", body)
                self.assertIn("resumed stored snapshot", envoy.output())
                self.assertNotIn("heavy-init: table built", envoy.output())
        finally:
            upstream.close()


class RefusalTest(OciBase):
    def index_of(self, ref):
        return json.loads(self.registry.oras("manifest", "fetch", ref).stdout)

    def push_index(self, repository, manifests, sign_with=None):
        """Pushes a hand-made index over existing manifests (by oras), signed by thaw's trusted key
        through cosign when asked."""
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        path = self.work / f"{repository.replace('/', '-')}-index.json"
        path.write_text(json.dumps(index))
        ref = self.registry.ref(repository, "crafted")
        self.registry.oras("manifest", "push", ref, path, "--media-type", INDEX)
        digest = sha256(path.read_bytes())
        if sign_with:
            self.registry.cosign("sign", "--key", sign_with, "--tlog-upload=false", "--allow-http-registry",
                                 f"{ref.rsplit(':', 1)[0]}@{digest}")
        return ref

    def test_a_blob_changed_in_the_registrys_storage_is_refused(self):
        ref, _ = self.push("tenants/tampered")
        index = self.index_of(ref)
        amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
        manifest = json.loads(self.registry.oras("manifest", "fetch", f"{ref.rsplit(':', 1)[0]}@{amd64['digest']}").stdout)
        layer = next(l for l in manifest["layers"] if l["mediaType"] == CWASM)
        blob = self.registry.blob_path(layer["digest"])
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        self.assert_refused(ref, self.fresh_dir("tampered"), "--platform", "linux/amd64",
                            message="does not match its descriptor")

    def test_a_manifest_that_names_the_wrong_platform_is_refused(self):
        cosign_key, cosign_pub = self.registry.cosign_key_pair("wrong-platform")
        ref, _ = self.push("tenants/mislabelled")
        amd64 = next(m for m in self.index_of(ref)["manifests"] if m["platform"]["architecture"] == "amd64")
        crafted = dict(amd64, platform={"os": "linux", "architecture": "arm64"})
        bad = self.push_index("tenants/mislabelled", [crafted], sign_with=cosign_key)
        self.assert_refused(bad, self.fresh_dir("mislabelled"), "--platform", "linux/arm64", key=cosign_pub,
                            message="wrong platform")

    def test_a_missing_architecture_is_refused(self):
        cosign_key, cosign_pub = self.registry.cosign_key_pair("missing-arch")
        ref, _ = self.push("tenants/amd64-only")
        amd64 = next(m for m in self.index_of(ref)["manifests"] if m["platform"]["architecture"] == "amd64")
        only = self.push_index("tenants/amd64-only", [amd64], sign_with=cosign_key)
        stderr = self.assert_refused(only, self.fresh_dir("amd64-only"), "--platform", "linux/arm64", key=cosign_pub,
                                     message="has no linux/arm64 manifest")
        self.assertIn("it has: linux/amd64", stderr)

    def test_an_unsigned_index_is_refused(self):
        ref, _ = self.push("tenants/unsigned-source")
        # The same manifests under an index nobody signed, in a repository without their signatures.
        index = self.index_of(ref)
        unsigned_repo = "tenants/unsigned"
        for m in index["manifests"]:
            subprocess.run([ORAS, "copy", "--from-plain-http", "--to-plain-http", f"{ref.rsplit(':', 1)[0]}@{m['digest']}",
                            f"{self.registry.host}/{unsigned_repo}:m-{m['digest'][7:19]}"],
                           env=self.registry.env(), check=True, capture_output=True, text=True, timeout=120)
        bad = self.push_index(unsigned_repo, index["manifests"])
        self.assert_refused(bad, self.fresh_dir("unsigned"), message="unsigned")


class BasicAuthTest(OciBase):
    auth = ("thaw", "s3cret")

    def test_push_and_pull_with_credentials_and_a_clear_error_without(self):
        ref, digest = self.push("tenants/private")
        out = self.fresh_dir("private")
        self.pull(ref, out)
        self.assertTrue((out / "auth-filter.cwasm").exists())
        env = {k: v for k, v in self.registry.env().items() if not k.startswith("THAW_REGISTRY_")}
        p = self.thaw("pull", ref, "-o", self.work / "anonymous", "--key", self.artifacts.public_key, env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("HTTP 401", p.stderr)
        self.assertIn("--username", p.stderr)
        wrong = dict(env, THAW_REGISTRY_USERNAME="thaw", THAW_REGISTRY_PASSWORD="wrong")
        p = self.thaw("pull", ref, "-o", self.work / "wrong", "--key", self.artifacts.public_key, env=wrong, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("credentials were refused", p.stderr)
        # oras with the same credentials sees what thaw pushed.
        self.assertIn(digest, self.registry.oras("manifest", "fetch", "--descriptor", ref).stdout)


if __name__ == "__main__":
    unittest.main()
