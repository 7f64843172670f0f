"""Hostile guests against the real Envoy: endless loops, endless allocation, endless recursion and
traps are each answered per on_error within the deadline, counted in Envoy's stats, and the
instance replaced; other tenants keep being served; crash loops are quarantined."""

import time
import unittest

import harness as h


class GuestBounds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = h.workdir()
        cls.artifacts = h.Artifacts(cls.dir)
        cls.chaos = cls.artifacts.signed("chaos-filter")
        cls.auth = cls.artifacts.signed("auth-filter")
        cls.upstream = h.Upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.close()
        h.cleanup(cls.dir)

    def config(self, on_error="deny", crash_loop=None, isolation="pooled"):
        cfg = {
            "trusted_keys": [str(self.artifacts.public_key)],
            "tenant_from": {"header": "x-tenant-id"},
            "on_error": on_error,
            "crash_loop": crash_loop or {"failures": 1000},
            "tenants": {
                "chaos": {"module": str(self.chaos), "isolation": isolation, "call_deadline_ms": 100, "memory_limit_mb": 8},
                "auth": {"module": str(self.auth), "plugin_config": {"tokens": {"t": "u"}}},
            },
        }
        return [h.thaw_filter(cfg)]

    def misbehave(self, envoy, what):
        started = time.monotonic()
        status, _, body = envoy.request("/", {"x-tenant-id": "chaos", "x-chaos": what})
        return status, body, time.monotonic() - started

    def wait_for(self, envoy, names, tenant, value, timeout=5):
        """Waits until the sum of the metrics `names` (one name or a tuple) for `tenant` is `value`."""
        names = (names,) if isinstance(names, str) else names
        total = lambda: sum(envoy.metric(n, tenant) or 0 for n in names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if total() == value:
                return
            time.sleep(0.1)
        self.fail(f"{names}{{tenant={tenant}}} is {total()}, expected {value}")

    def test_each_misbehaviour_fails_closed_is_counted_and_replaced(self):
        trap, overflow = "envoy_thaw_wasm_guest_trap_total", "envoy_thaw_wasm_stack_overflow_total"
        cases = [
            ("loop", "envoy_thaw_wasm_deadline_exceeded_total", 1),
            ("alloc", "envoy_thaw_wasm_memory_cap_hit_total", 1),
            # A Rust guest's stack lives in its linear memory: running it out is an out-of-bounds
            # trap before Wasmtime's native stack bound (host tests cover that one).
            ("recurse", (trap, overflow), 1),
            ("trap", (trap, overflow), 2),
        ]
        with h.Envoy(self.config(), self.upstream, self.dir) as envoy:
            for what, metric, count in cases:
                status, body, took = self.misbehave(envoy, what)
                self.assertEqual(status, 503, what)
                self.assertIn(b"the tenant's filter failed", body, what)
                self.assertLess(took, 1.0, f"{what} took {took:.3f} s")
                self.wait_for(envoy, metric, "chaos", count)
                # The failed instance was replaced: the tenant serves its next request.
                self.assertEqual(envoy.request("/", {"x-tenant-id": "chaos"})[0], 200, what)
                # Other tenants never noticed.
                self.assertEqual(envoy.request("/", {"x-tenant-id": "auth", "authorization": "Bearer t"})[0], 200, what)
            self.assertIn("CPU deadline exceeded", envoy.output())

    def test_fail_open_lets_the_request_through(self):
        with h.Envoy(self.config(on_error="allow"), self.upstream, self.dir) as envoy:
            status, _, _ = self.misbehave(envoy, "trap")
            self.assertEqual(status, 200)
            self.wait_for(envoy, "envoy_thaw_wasm_guest_trap_total", "chaos", 1)

    def test_a_crash_loop_is_quarantined_then_released(self):
        crash_loop = {"failures": 3, "window_ms": 10000, "quarantine_ms": 1500}
        with h.Envoy(self.config(crash_loop=crash_loop), self.upstream, self.dir, concurrency=1) as envoy:
            for _ in range(3):
                self.assertEqual(self.misbehave(envoy, "trap")[0], 503)
            # Quarantined: even a good request is denied without running the guest.
            self.assertEqual(envoy.request("/", {"x-tenant-id": "chaos"})[0], 503)
            self.wait_for(envoy, "envoy_thaw_wasm_quarantine_total", "chaos", 1)
            self.wait_for(envoy, "envoy_thaw_wasm_quarantined_request_total", "chaos", 1)
            self.assertIn("quarantined", envoy.output())
            self.assertEqual(envoy.request("/", {"x-tenant-id": "auth", "authorization": "Bearer t"})[0], 200)
            time.sleep(1.7)
            self.assertEqual(envoy.request("/", {"x-tenant-id": "chaos"})[0], 200)


class Stats(unittest.TestCase):
    def test_stats_appear_with_their_names_and_values(self):
        d = h.workdir()
        try:
            artifacts = h.Artifacts(d)
            auth = artifacts.signed("auth-filter")
            upstream = h.Upstream()
            cfg = {
                "trusted_keys": [str(artifacts.public_key)],
                "tenant_from": {"header": "x-tenant-id"},
                "tenants": {
                    "pool": {"module": str(auth), "isolation": "pooled", "plugin_config": {"tokens": {"t": "u"}}},
                    "fresh": {"module": str(auth), "plugin_config": {"tokens": {"t": "u"}}},
                },
            }
            with h.Envoy([h.thaw_filter(cfg)], upstream, d, concurrency=1) as envoy:
                for _ in range(5):
                    self.assertEqual(envoy.request("/", {"x-tenant-id": "pool", "authorization": "Bearer t"})[0], 200)
                    self.assertEqual(envoy.request("/", {"x-tenant-id": "fresh", "authorization": "Bearer t"})[0], 200)
                time.sleep(1.2)  # histograms appear after a stats flush (0.5 s here)
                m = envoy.metric
                self.assertEqual(m("envoy_thaw_wasm_pool_miss_total", "pool"), 1)
                self.assertEqual(m("envoy_thaw_wasm_pool_hit_total", "pool"), 4)
                self.assertEqual(m("envoy_thaw_wasm_instance_pool_size", "pool"), 1)
                self.assertEqual(m("envoy_thaw_wasm_instance_pool_size", "fresh"), None)
                # One cold start for the pooled tenant, one per request for the fresh one; the
                # latency histograms are not labelled by tenant.
                self.assertEqual(m("envoy_thaw_wasm_cold_start_microseconds_count"), 6)
                self.assertEqual(m("envoy_thaw_wasm_cold_start_microseconds_count", "pool"), None)
                # Both tenants use one artifact: it was read, verified and loaded once.
                self.assertEqual(m("envoy_thaw_wasm_aot_load_microseconds_count"), 1)
            upstream.close()
        finally:
            h.cleanup(d)


if __name__ == "__main__":
    unittest.main()
