"""Reloads against the real Envoy, its listener from a file (LDS): a listener update creates the filter
config anew, and thaw reuses what an earlier live config verified and loaded for files that did not
change (its log says how many), loads only the changed tenant, refuses an artifact tampered in
place even though an earlier config had verified that path, and reads `tenants_dir` again on a
reload (triggered by `revision`)."""

import json
import os
import re
import shutil
import time
import unittest
import urllib.request
from pathlib import Path

import harness as h

REUSED = re.compile(r"(\d+) tenants loaded from (\d+) artifact files \((\d+) distinct\), signatures verified; "
                    r"(\d+) files as an earlier config verified them")


def wait_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class ListenerFile:
    """The bootstrap of an Envoy whose one listener comes from `lds.json` in `dir`."""

    def __init__(self, dir, upstream):
        self.dir, self.upstream = Path(dir), upstream
        self.port, self.admin = h.free_port(), h.free_port()
        self.lds = self.dir / "lds.json"

    def bootstrap(self):
        static = h.envoy_config([], self.upstream.port, self.port, self.admin)
        return json.dumps({
            "node": {"id": "reload", "cluster": "reload"},
            "admin": static["admin"],
            "stats_flush_interval": "0.5s",
            "dynamic_resources": {"lds_config": {"path_config_source": {"path": str(self.lds)}, "resource_api_version": "V3"}},
            "static_resources": {"clusters": static["static_resources"]["clusters"]},
        })

    def write(self, filter_config):
        listener = h.envoy_config([h.thaw_filter(filter_config)], self.upstream.port, self.port, self.admin)
        listener = listener["static_resources"]["listeners"][0]
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        tmp = self.lds.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": [listener]}))
        os.rename(tmp, self.lds)


def counter(envoy, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats?filter=^{re.escape(name)}$", timeout=5) as r:
        m = re.search(rf"^{re.escape(name)}: (\d+)", r.read().decode(), re.M)
    return int(m.group(1)) if m else 0


class Reload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = h.workdir()
        cls.art = h.Artifacts(cls.dir)
        cls.auth = cls.art.signed("auth-filter")
        cls.decision = cls.art.signed("decision-filter")
        cls.upstream = h.Upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.close()
        h.cleanup(cls.dir)

    def copy(self, src, name):
        """A copy of a signed artifact under another name (another file, the same bytes)."""
        dst = Path(self.dir) / name
        shutil.copyfile(src, dst)
        shutil.copyfile(f"{src}.sig", f"{dst}.sig")
        return dst

    def config(self, tenants, **extra):
        return {"trusted_keys": [str(self.art.public_key)], "tenant_from": {"header": "x-tenant-id"},
                "tenants": tenants, **extra}

    def auth_tenant(self, path, token):
        return {"module": str(path), "plugin_config": {"tokens": {token: "alice"}}}

    def loads(self, envoy):
        return [tuple(map(int, m)) for m in REUSED.findall(envoy.output())]

    def update(self, envoy, listener, filter_config, outcome="update_success"):
        before = counter(envoy, f"listener_manager.lds.{outcome}")
        listener.write(filter_config)
        self.assertTrue(wait_until(lambda: counter(envoy, f"listener_manager.lds.{outcome}") > before, 30),
                        f"no lds {outcome}:\n{envoy.output()[-3000:]}")

    def status(self, envoy, tenant, token):
        status, _, _ = envoy.request("/", {"x-tenant-id": tenant, "authorization": f"Bearer {token}"})
        return status

    def test_a_reload_loads_only_what_changed_and_refuses_a_file_tampered_in_place(self):
        a, b, c = (self.copy(self.auth, f"{n}.cwasm") for n in "abc")
        # Stamps of files changed this recently are not kept (load_cache's racy rule).
        time.sleep(0.2)
        listener = ListenerFile(self.dir, self.upstream)
        tenants = {"ta": self.auth_tenant(a, "tok-a"), "tb": self.auth_tenant(b, "tok-b"), "tc": self.auth_tenant(c, "tok-c")}
        listener.write(self.config(tenants))
        with h.Envoy([], self.upstream, self.dir, config_text=listener.bootstrap(), port=listener.port,
                     admin_port=listener.admin) as envoy:
            self.assertTrue(wait_until(lambda: self.status(envoy, "ta", "tok-a") == 200, 30), envoy.output()[-3000:])
            self.assertEqual(self.loads(envoy), [(3, 3, 1, 0)])

            # tb moves to another artifact; ta and tc are as before.
            tenants["tb"] = {"module": str(self.decision)}
            self.update(envoy, listener, self.config(tenants))
            self.assertEqual(self.loads(envoy)[-1], (3, 3, 2, 2), envoy.output()[-2000:])
            self.assertEqual(self.status(envoy, "ta", "tok-a"), 200)
            self.assertEqual(self.status(envoy, "ta", "wrong"), 403)
            self.assertEqual(self.status(envoy, "tc", "tok-c"), 200)
            status, headers, _ = envoy.request("/", {"x-tenant-id": "tb", "x-decide-phase": "request-headers", "x-decide": "deny"})
            self.assertEqual((status, headers.get("x-decision-saw-response")), (403, "1"), "tb runs the decision filter now")

            # A plugin configuration change reuses the verified file; the new token is what counts.
            tenants["ta"] = self.auth_tenant(a, "tok-a2")
            self.update(envoy, listener, self.config(tenants))
            self.assertEqual(self.loads(envoy)[-1][3], 3)
            self.assertEqual(self.status(envoy, "ta", "tok-a2"), 200)
            self.assertEqual(self.status(envoy, "ta", "tok-a"), 403)

            # tc's file tampered in place (same size, same inode): the update is refused, counted,
            # and the last good config keeps serving every tenant.
            data = bytearray(c.read_bytes())
            data[len(data) // 2] ^= 0x01
            with open(c, "r+b") as f:
                f.write(data)
            self.update(envoy, listener, self.config(tenants, revision=1), outcome="update_rejected")
            self.assertIn("tenant `tc`: artifact refused", envoy.output())
            self.assertEqual(self.status(envoy, "tc", "tok-c"), 200)
            self.assertEqual(self.status(envoy, "ta", "tok-a2"), 200)
            gauge = 'envoy_thaw_wasm_artifact_refused{tenant="tc",reason="signature"} 1'
            self.assertTrue(wait_until(lambda: gauge in envoy.stats(), 10), "the refusal is counted (in the live config's stats)")

            # Signed again: accepted; only tc's file is read and verified anew.
            self.art.sign(c)
            time.sleep(0.2)
            self.update(envoy, listener, self.config(tenants, revision=2))
            self.assertEqual(self.loads(envoy)[-1][3], 2)
            self.assertEqual(self.status(envoy, "tc", "tok-c"), 200)

    def test_tenants_dir_is_read_again_on_a_reload(self):
        tdir = Path(self.dir) / "tenants"
        tdir.mkdir()
        (tdir / "red.json").write_text(json.dumps(self.auth_tenant(self.auth, "tok-red")))
        listener = ListenerFile(self.dir, self.upstream)
        config = {"trusted_keys": [str(self.art.public_key)], "tenant_from": {"header": "x-tenant-id"}, "tenants_dir": str(tdir)}
        listener.write(config)
        with h.Envoy([], self.upstream, self.dir, config_text=listener.bootstrap(), port=listener.port,
                     admin_port=listener.admin) as envoy:
            self.assertTrue(wait_until(lambda: self.status(envoy, "red", "tok-red") == 200, 30), envoy.output()[-3000:])
            self.assertEqual(self.status(envoy, "blue", "tok-blue"), 403, "unknown tenant")
            (tdir / "blue.json").write_text(json.dumps(self.auth_tenant(self.auth, "tok-blue")))
            self.update(envoy, listener, dict(config, revision="2"))
            self.assertEqual(self.status(envoy, "blue", "tok-blue"), 200)
            self.assertEqual(self.status(envoy, "red", "tok-red"), 200)
            # A bad tenant file rejects the update, naming it; the last good config serves on.
            (tdir / "green.json").write_text('{"module": 7}')
            self.update(envoy, listener, dict(config, revision="3"), outcome="update_rejected")
            self.assertIn("green.json", envoy.output())
            self.assertEqual(self.status(envoy, "blue", "tok-blue"), 200)


if __name__ == "__main__":
    unittest.main()
