"""Every artifact, key and config that must not load makes `envoy --mode validate` fail, with a
message naming the tenant, the file and the reason. Real Envoy, real files, real signatures."""

import json
import shutil
import unittest
from pathlib import Path

import harness as h


class Refusals(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(h.workdir())
        cls.artifacts = h.Artifacts(cls.dir)
        cls.good = cls.artifacts.signed("auth-filter", "good")

    @classmethod
    def tearDownClass(cls):
        h.cleanup(cls.dir)

    def config(self, module, signature=None, **extra):
        tenant = {"module": str(module), "plugin_config": {"tokens": {"t": "s"}}}
        if signature:
            tenant["signature"] = str(signature)
        cfg = {
            "trusted_keys": [str(self.artifacts.public_key)],
            "tenant_from": {"header": "x-tenant-id"},
            "tenants": {"acme": tenant},
        }
        cfg.update(extra)
        return h.envoy_config([h.thaw_filter(cfg)], 1, h.free_port(), h.free_port())

    def assert_refused(self, config, *needles):
        ok, output = h.validate(config, self.dir)
        self.assertFalse(ok, "envoy --mode validate accepted a config it must refuse")
        for needle in needles:
            self.assertIn(needle, output)
        return output

    def copy(self, name):
        path = self.dir / name
        shutil.copy(self.good, path)
        return path

    def test_the_good_artifact_validates(self):
        ok, output = h.validate(self.config(self.good), self.dir)
        self.assertTrue(ok, output)
        self.assertIn("signatures verified", output)

    def test_a_module_declaring_no_abi_version_is_refused_at_compile_and_sign_as_envoy_refuses_it(self):
        """A module exporting memory and an allocator but no `proxy_abi_version_*`: Envoy's Wasm
        filter refuses it at load ("Missing or unknown Proxy-Wasm ABI version"); so do `thaw
        compile` and `thaw sign`, with the same words."""
        section = lambda sid, body: bytes([sid, len(body)]) + body
        name = lambda text: bytes([len(text)]) + text
        wasm = (b"\0asm\x01\0\0\0"
                + section(1, b"\x01\x60\x01\x7f\x01\x7f")  # type: (i32) -> i32
                + section(3, b"\x01\x00")  # one function of that type
                + section(5, b"\x01\x00\x01")  # one memory, one page
                + section(7, b"\x02" + name(b"memory") + b"\x02\x00" + name(b"malloc") + b"\x00\x00")
                + section(10, b"\x01\x04\x00\x41\x00\x0b"))  # malloc returns 0
        path = self.dir / "no-abi.wasm"
        path.write_bytes(wasm)
        for args in (["compile", path, "-o", self.dir / "no-abi.cwasm"], ["sign", "--key", self.artifacts.private_key, path, "-o", self.dir / "no-abi.sig"]):
            p = h.thaw(*args, check=False)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn("Missing or unknown Proxy-Wasm ABI version", p.stderr, args)
        self.assertFalse((self.dir / "no-abi.cwasm").exists())
        # Envoy's own Wasm filter refuses the same module, for the same reason.
        v8 = {"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "no-abi", "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(path)}}}}}}
        ok, output = h.validate(h.envoy_config([v8], 1, h.free_port(), h.free_port()), self.dir)
        self.assertFalse(ok)
        self.assertIn("Missing or unknown Proxy-Wasm ABI version", output)

    def test_unsigned(self):
        path = self.copy("unsigned.cwasm")
        self.assert_refused(self.config(path), "tenant `acme`", str(path), "unsigned", f"{path}.sig")

    def test_signed_by_an_untrusted_key(self):
        path = self.copy("other-key.cwasm")
        self.artifacts.sign(path, key=self.artifacts.other_private_key)
        self.assert_refused(self.config(path), "tenant `acme`", f"{path}.sig", "does not verify with any trusted key")

    def test_tampered_after_signing(self):
        path = self.copy("tampered.cwasm")
        self.artifacts.sign(path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        self.assert_refused(self.config(path), "tenant `acme`", "does not verify with any trusted key")

    def test_truncated_after_signing(self):
        path = self.copy("truncated.cwasm")
        self.artifacts.sign(path)
        path.write_bytes(path.read_bytes()[:4096])
        self.assert_refused(self.config(path), "tenant `acme`", "does not verify with any trusted key")

    def test_truncated_then_signed_is_not_an_artifact(self):
        path = self.dir / "truncated-signed.cwasm"
        path.write_bytes(self.good.read_bytes()[:4096])
        self.artifacts.sign(path)
        self.assert_refused(self.config(path), "tenant `acme`", str(path), "not a Wasm artifact")

    def test_wrong_architecture(self):
        path = self.artifacts.compiled("auth-filter", "arm", target="aarch64")
        self.artifacts.sign(path)
        self.assert_refused(self.config(path), "tenant `acme`", str(path), "aarch64", "wrong architecture")

    def test_wrong_engine_version(self):
        # What an artifact built by another Wasmtime major looks like: its engine section says so.
        data = self.good.read_bytes()
        marker = b"\x00\x0240"
        self.assertEqual(data.count(marker), 1)
        path = self.dir / "old-engine.cwasm"
        path.write_bytes(data.replace(marker, b"\x00\x0239"))
        self.artifacts.sign(path)
        self.assert_refused(self.config(path), "tenant `acme`", str(path), "incompatible engine", "Wasmtime 39")

    def test_plain_wasm_needs_allow_jit(self):
        wasm = self.dir / "plain.wasm"
        shutil.copy(h.GUESTS / "auth-filter.wasm", wasm)
        self.artifacts.sign(wasm)
        self.assert_refused(self.config(wasm), "tenant `acme`", str(wasm), "allow_jit")
        ok, output = h.validate(self.config(wasm, allow_jit=True), self.dir)
        self.assertTrue(ok, output)
        self.assertIn("JIT-compiled at config load", output)

    def test_unknown_field_is_named(self):
        cfg = self.config(self.good)
        struct = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
        struct["typed_config"]["filter_config"]["value"]["tenants"]["acme"]["modul"] = "x"
        self.assert_refused(cfg, "invalid filter_config field `tenants.acme`", "unknown field `modul`")

    def test_bad_policy_value_is_named(self):
        self.assert_refused(self.config(self.good, on_error="shrug"), "invalid filter_config field", "shrug")

    def test_unreadable_trusted_key(self):
        cfg = self.config(self.good, trusted_keys=[str(self.dir / "missing.pub")])
        self.assert_refused(cfg, "trusted_keys", "missing.pub")

    def test_a_guest_that_rejects_its_configuration(self):
        cfg = self.config(self.good)
        filt = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
        filt["typed_config"]["filter_config"]["value"]["tenants"]["acme"]["plugin_config"] = {"tokens": 5}
        self.assert_refused(cfg, "tenant `acme`", "rejected its configuration", "proxy_on_configure")


if __name__ == "__main__":
    unittest.main()
