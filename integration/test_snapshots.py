"""Post-init snapshots against the real Envoy: a heavy-init guest's init runs once per snapshot,
not per worker or per instance; new Envoy processes resume the stored snapshot without running
init; a snapshot made at build time by `thaw snapshot` is resumed; a damaged one is refused,
counted and replaced; with `snapshots.signed`, a shipped snapshot is used only when its signature
verifies under the config's trust (an unsigned or wrongly signed one is refused and counted)."""

import concurrent.futures
import time
import unittest
from pathlib import Path

import harness as h

INIT_LINE = "heavy-init: table built"
CONFIG = {"entries": 300000, "marker": "m1"}


class Snapshots(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(h.workdir())
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.signed("heavy-init-filter", "heavy")
        cls.source = cls.dir / "heavy.wasm"
        cls.source.write_bytes((h.GUESTS / "heavy-init-filter.wasm").read_bytes())
        cls.artifacts.sign(cls.source)
        cls.key = cls.dir / "snapshot.key"
        cls.key.write_bytes(bytes(range(32)))
        cls.upstream = h.Upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.close()
        h.cleanup(cls.dir)

    def filters(self, snapshot_dir, snapshots=True, isolation="per_request", signed=False):
        tenant = {"module": str(self.module), "plugin_config": CONFIG, "isolation": isolation, "call_deadline_ms": 2000}
        cfg = {"trusted_keys": [str(self.artifacts.public_key)], "tenant_from": {"header": "x-tenant-id"}, "tenants": {"heavy": tenant}}
        if snapshots:
            cfg["snapshots"] = {"dir": str(snapshot_dir), "key": str(self.key), "signed": signed}
            tenant["snapshot"] = {"source": str(self.source)}
        return [h.thaw_filter(cfg)]

    def serve_many(self, envoy, count=40):
        def one(_):
            status, _, body = envoy.request("/", {"x-tenant-id": "heavy"})
            self.assertEqual(status, 200, body)
            return body.decode()

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            bodies = set(pool.map(one, range(count)))
        self.assertEqual(len(bodies), 1, bodies)
        body = bodies.pop()
        self.assertIn("entries=300000", body)
        self.assertIn("ticks=60000", body)  # the tick period set in init survived resume
        self.assertIn("metric=ok", body)  # so did the metric the guest defined in init
        return body

    def test_init_runs_once_per_snapshot_and_new_processes_resume_it(self):
        snapshot_dir = self.dir / "runtime-snapshots"
        with h.Envoy(self.filters(snapshot_dir), self.upstream, self.dir, concurrency=2) as envoy:
            body = self.serve_many(envoy)
            self.assertEqual(envoy.output().count(INIT_LINE), 1)
            self.assertIn("ran init once and stored its snapshot", envoy.output())
            time.sleep(1.2)
            self.assertGreaterEqual(envoy.metric("envoy_thaw_wasm_snapshot_resume_microseconds_count"), 40)
            self.assertEqual(envoy.metric("envoy_thaw_wasm_cold_start_microseconds_count"), 0)
        self.assertTrue((snapshot_dir / "heavy" / "snapshot.thaw").is_file())
        with h.Envoy(self.filters(snapshot_dir), self.upstream, self.dir, concurrency=2) as envoy:
            self.assertEqual(self.serve_many(envoy), body)
            self.assertEqual(envoy.output().count(INIT_LINE), 0)
            self.assertIn("resumed stored snapshot", envoy.output())

    def test_without_snapshots_init_runs_per_instance(self):
        # The control: the same tenant without snapshots runs init at load and for every instance.
        with h.Envoy(self.filters(None, snapshots=False), self.upstream, self.dir, concurrency=2) as envoy:
            self.serve_many(envoy, count=10)
            self.assertEqual(envoy.output().count(INIT_LINE), 11)

    def test_a_build_time_snapshot_is_resumed(self):
        snapshot_dir = self.dir / "built-snapshots"
        config = self.dir / "plugin-config.json"
        import json
        config.write_text(json.dumps(CONFIG, separators=(",", ":")))
        h.thaw("snapshot", self.source, "--tenant", "heavy", "--plugin-config", config,
               "--seal-key", self.key, "--snapshot-dir", snapshot_dir)
        with h.Envoy(self.filters(snapshot_dir), self.upstream, self.dir, concurrency=2) as envoy:
            self.serve_many(envoy)
            self.assertEqual(envoy.output().count(INIT_LINE), 0)
            self.assertIn("resumed stored snapshot", envoy.output())

    def test_a_signed_build_time_snapshot_is_verified_before_it_is_unsealed(self):
        snapshot_dir = self.dir / "signed-snapshots"
        config = self.dir / "plugin-config-signed.json"
        import json
        config.write_text(json.dumps(CONFIG, separators=(",", ":")))
        stored = snapshot_dir / "heavy" / "snapshot.thaw"

        def build(key, bundle):
            h.thaw("snapshot", self.source, "--tenant", "heavy", "--plugin-config", config, "--seal-key", self.key,
                   "--snapshot-dir", snapshot_dir, "--key", key, *(["--bundle"] if bundle else []))

        # Signed with the trusted key, as a detached signature and as a bundle: resumed, init not run.
        for bundle in (False, True):
            build(self.artifacts.private_key, bundle)
            self.assertEqual(Path(f"{stored}.sigstore.json").exists(), bundle)
            self.assertEqual(Path(f"{stored}.sig").exists(), not bundle)
            with h.Envoy(self.filters(snapshot_dir, signed=True), self.upstream, self.dir, concurrency=1) as envoy:
                self.serve_many(envoy, count=2)
                self.assertEqual(envoy.output().count(INIT_LINE), 0)
                self.assertIn("resumed stored snapshot", envoy.output())
        # Signed with another key, or not at all: refused before unsealing, counted; init runs and
        # the snapshot made now is not stored (only shipped, signed snapshots are).
        build(self.artifacts.other_private_key, True)
        Path(f"{stored}.sig").unlink(missing_ok=True)
        cases = [("wrongly signed", lambda: None), ("unsigned", lambda: Path(f"{stored}.sigstore.json").unlink())]
        for what, change in cases:
            change()
            shipped = stored.read_bytes()
            with h.Envoy(self.filters(snapshot_dir, signed=True), self.upstream, self.dir, concurrency=1) as envoy:
                self.serve_many(envoy, count=2)
                self.assertIn("not signed under the trust (snapshots.signed)", envoy.output(), what)
                self.assertEqual(envoy.output().count(INIT_LINE), 1, what)
                self.assertIn("snapshotted it in memory", envoy.output(), what)
                self.assertEqual(envoy.metric("envoy_thaw_wasm_snapshot_refused_total", "heavy"), 1, what)
            self.assertEqual(stored.read_bytes(), shipped, what)

    def test_a_damaged_snapshot_is_refused_counted_and_replaced(self):
        snapshot_dir = self.dir / "damaged-snapshots"
        with h.Envoy(self.filters(snapshot_dir), self.upstream, self.dir, concurrency=1) as envoy:
            self.serve_many(envoy, count=2)
        stored = snapshot_dir / "heavy" / "snapshot.thaw"
        data = bytearray(stored.read_bytes())
        data[len(data) // 3] ^= 0xFF
        stored.write_bytes(bytes(data))
        with h.Envoy(self.filters(snapshot_dir), self.upstream, self.dir, concurrency=1) as envoy:
            self.serve_many(envoy, count=2)
            self.assertIn("refused (seal does not verify", envoy.output())
            self.assertEqual(envoy.output().count(INIT_LINE), 1)
            self.assertEqual(envoy.metric("envoy_thaw_wasm_snapshot_refused_total", "heavy"), 1)
        self.assertNotEqual(stored.read_bytes(), bytes(data))


if __name__ == "__main__":
    unittest.main()
