"""Isolation modes against the real Envoy: a probe guest that remembers the previous request's
secret never echoes anything under per_request, and never another tenant's secret under pooled,
across many interleaved concurrent requests over two workers. Retirement by requests and by age."""

import concurrent.futures
import time
import unittest

import harness as h


def probe_config(artifacts, module, isolation, **knobs):
    tenant = {"module": str(module), "isolation": isolation, **knobs}
    return {
        "trusted_keys": [str(artifacts.public_key)],
        "tenant_from": {"header": "x-tenant-id"},
        "tenants": {"red": dict(tenant), "blue": dict(tenant)},
    }


def previous(envoy, tenant, secret):
    status, _, body = envoy.request("/", {"x-tenant-id": tenant, "x-secret": secret})
    assert status == 200, (status, body)
    text = body.decode()
    assert text.startswith("previous="), text
    return text[len("previous="):]


def interleaved(envoy, count=400):
    """Many concurrent requests alternating tenants; returns [(tenant, echoed previous secret)]."""
    def one(i):
        tenant = ("red", "blue")[i % 2]
        return tenant, previous(envoy, tenant, f"{tenant}-secret-{i}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


class Isolation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = h.workdir()
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.signed("probe-filter")
        cls.upstream = h.Upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.close()
        h.cleanup(cls.dir)

    def envoy(self, isolation, concurrency=2, **knobs):
        config = probe_config(self.artifacts, self.module, isolation, **knobs)
        return h.Envoy([h.thaw_filter(config)], self.upstream, self.dir, concurrency=concurrency)

    def test_per_request_instances_never_carry_anything_over(self):
        with self.envoy("per_request") as envoy:
            echoed = interleaved(envoy)
        self.assertEqual({e for _, e in echoed}, {""})

    def test_pooled_instances_never_see_another_tenants_secret(self):
        with self.envoy("pooled") as envoy:
            echoed = interleaved(envoy)
            hits = (envoy.metric("envoy_thaw_wasm_pool_hit_total", "red") or 0) + (
                envoy.metric("envoy_thaw_wasm_pool_hit_total", "blue") or 0)
        leaks = [(t, e) for t, e in echoed if e and not e.startswith(f"{t}-")]
        self.assertEqual(leaks, [])
        # The test has teeth: pooled instances really were reused (they echo their own tenant's past).
        self.assertGreater(sum(1 for _, e in echoed if e), len(echoed) // 2)
        self.assertGreater(hits, len(echoed) // 2)

    def test_pooled_instances_retire_after_max_requests(self):
        with self.envoy("pooled", concurrency=1, max_requests=2) as envoy:
            self.assertEqual(previous(envoy, "red", "a"), "")
            self.assertEqual(previous(envoy, "red", "b"), "a")
            self.assertEqual(previous(envoy, "red", "c"), "")  # a fresh instance
            self.assertEqual(previous(envoy, "red", "d"), "c")

    def test_pooled_instances_retire_by_age(self):
        with self.envoy("pooled", concurrency=1, max_age_ms=400) as envoy:
            self.assertEqual(previous(envoy, "red", "a"), "")
            self.assertEqual(previous(envoy, "red", "b"), "a")
            time.sleep(0.6)
            self.assertEqual(previous(envoy, "red", "c"), "")

    def test_pooled_instances_retire_when_idle(self):
        with self.envoy("pooled", concurrency=1, idle_timeout_ms=300) as envoy:
            self.assertEqual(previous(envoy, "red", "a"), "")
            time.sleep(0.5)
            self.assertEqual(previous(envoy, "red", "b"), "")


if __name__ == "__main__":
    unittest.main()
