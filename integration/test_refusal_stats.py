"""A refused artifact stays visible in Envoy's stats even when the config that refused it was
rejected: Envoy drops a rejected config's stats scope, so thaw keeps a process-wide tally and sets
it into every live config's `wasm_artifact_refused{tenant,reason}` gauge. Driven through real Envoy
listener updates from a file (LDS), as a control plane would push them."""

import json
import os
import time
import unittest
from pathlib import Path

import harness as h


def listener(http_filters, port):
    """The harness's listener, as an LDS resource."""
    config = h.envoy_config(http_filters, 1, port, 1)
    return dict(config["static_resources"]["listeners"][0], **{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"})


class RefusalStats(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(h.workdir())
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.signed("auth-filter")
        cls.tampered = cls.dir / "tampered.cwasm"
        cls.tampered.write_bytes(cls.module.read_bytes() + b"\0")
        Path(f"{cls.tampered}.sig").write_bytes(Path(f"{cls.module}.sig").read_bytes())
        cls.upstream = h.Upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.close()
        h.cleanup(cls.dir)

    def filter_config(self, tenants):
        entry = lambda module: {"module": str(module), "plugin_config": {"tokens": {"s3cret": "alice"}}}
        return {"trusted_keys": [str(self.artifacts.public_key)], "tenant_from": {"header": "x-tenant-id"},
                "tenants": {name: entry(module) for name, module in tenants.items()}}

    def push(self, lds, tenants, port):
        """Replaces the LDS file atomically with a listener running `tenants`."""
        tmp = lds.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": [listener([h.thaw_filter(self.filter_config(tenants))], port)]}))
        os.replace(tmp, lds)

    def wait_for(self, envoy, predicate, what):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        self.fail(f"{what} not seen:\n{envoy.output()[-3000:]}")

    def test_a_rejected_configs_refusal_is_counted_in_the_live_configs_stats(self):
        port = h.free_port()
        lds = self.dir / "lds.json"
        self.push(lds, {"acme": self.module}, port)
        bootstrap = h.envoy_config([], self.upstream.port, port, h.free_port())
        admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
        bootstrap["static_resources"]["listeners"] = []
        bootstrap["node"] = {"id": "thaw-test", "cluster": "thaw-test"}
        bootstrap["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(lds)}, "resource_api_version": "V3"}}
        with h.Envoy([], self.upstream, self.dir, config_text=json.dumps(bootstrap), port=port, admin_port=admin_port) as envoy:
            status, _, _ = envoy.request("/", {"x-tenant-id": "acme", "authorization": "Bearer s3cret"})
            self.assertEqual(status, 200)
            # An update whose new tenant's artifact was tampered with: Envoy rejects it and keeps
            # serving the config it had; the refusal shows in that config's stats.
            self.push(lds, {"acme": self.module, "evil": self.tampered}, port)
            gauge = 'envoy_thaw_wasm_artifact_refused{tenant="evil",reason="signature"} 1'
            self.wait_for(envoy, lambda: gauge in envoy.stats(), gauge)
            self.assertIn("tenant `evil`: artifact refused", envoy.output())
            status, _, _ = envoy.request("/", {"x-tenant-id": "acme", "authorization": "Bearer s3cret"})
            self.assertEqual(status, 200)
            status, _, _ = envoy.request("/", {"x-tenant-id": "evil"})
            self.assertEqual(status, 403)  # still unknown: the rejected config never served
            # The next accepted config carries the tally on.
            self.push(lds, {"acme": self.module, "beta": self.module}, port)
            beta = lambda: envoy.request("/", {"x-tenant-id": "beta", "authorization": "Bearer s3cret"})[0] == 200
            self.wait_for(envoy, beta, "the accepted update serving tenant beta")
            self.assertIn(gauge, envoy.stats())


if __name__ == "__main__":
    unittest.main()
