"""The per-worker cold-start limit (`cold_starts`) in a real Envoy 1.40.0: past the bucket, the
first request of a tenant the worker has not served is shed (503, `retry-after`) before the guest
and the upstream, even with `on_error: allow`; tenants the worker serves are never shed; the shed
requests are counted in `wasm_cold_start_shed_total`."""

import unittest

import harness as h


class ColdStartLimit(unittest.TestCase):
    def test_new_tenants_past_the_bucket_are_shed_and_served_ones_are_not(self):
        d = h.workdir()
        upstream = h.Upstream()
        try:
            artifacts = h.Artifacts(d)
            module = artifacts.signed("auth-filter")
            config = {
                "trusted_keys": [str(artifacts.public_key)],
                "tenant_from": {"header": "x-tenant-id"},
                # allow: a shed request would be passed unfiltered if shedding went through on_error.
                "on_error": "allow",
                # One token a second, three in the bucket: the fourth new tenant within a second is shed.
                "cold_starts": {"per_second": 1, "burst": 3},
                "tenants": {f"t{i}": {"module": str(module), "plugin_config": {"tokens": {f"k{i}": f"user{i}"}}}
                            for i in range(5)},
            }
            with h.Envoy([h.thaw_filter(config)], upstream, d, concurrency=1) as envoy:
                def request(tenant, token):
                    before = len(upstream.seen)
                    status, headers, body = envoy.request("/", {"x-tenant-id": tenant, "authorization": f"Bearer {token}"})
                    return status, headers, body, upstream.seen[before:]

                for i in range(3):
                    status, _, body, forwarded = request(f"t{i}", f"k{i}")
                    self.assertEqual((status, len(forwarded)), (200, 1), body)
                status, headers, body, forwarded = request("t3", "k3")
                self.assertEqual(status, 503, body)
                self.assertIn(b"too many new tenants", body)
                self.assertEqual(headers.get("retry-after"), "1")
                self.assertEqual(forwarded, [])
                # Its guest never ran: a bad token would have been a 403 from the filter.
                self.assertEqual(request("t4", "wrong")[0], 503)
                # Served tenants are warm: never shed, and still filtered.
                for _ in range(5):
                    self.assertEqual(request("t0", "k0")[0], 200)
                    self.assertEqual(request("t1", "wrong")[0], 403)
                self.assertEqual(envoy.metric("envoy_thaw_wasm_cold_start_shed_total", "t3"), 1)
                self.assertEqual(envoy.metric("envoy_thaw_wasm_cold_start_shed_total", "t4"), 1)
                self.assertIsNone(envoy.metric("envoy_thaw_wasm_cold_start_shed_total", "t0"))
        finally:
            upstream.close()
            h.cleanup(d)


if __name__ == "__main__":
    unittest.main()
