"""HTTP calls during init (a WAF fetching its rules from `proxy_on_configure`), against the real
Envoy: V8 and thaw (a pooled and a per_request tenant) run `examples/waf-filter` side by side. Once
the rules are in, both block and allow the same requests; thaw fetched the rules once per tenant
(its root instance) however many instances served; requests that arrive before a tenant's init
calls are answered get 503 (on_error: deny), counted as `wasm_tenant_not_ready_total`."""

import copy
import http.server
import json
import time
import unittest
import urllib.request
from pathlib import Path

import harness as h

RULES = b"/admin\n/secret\n"
THAW_TENANTS = {"waf-pooled": "pooled", "waf-fresh": "per_request"}


class RulesServer:
    """Answers `GET /rules` with RULES after `delay_s`, counting calls per Host header."""

    def __init__(self, delay_s=0.0):
        self.calls = []
        calls, delay = self.calls, delay_s

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                calls.append(self.path)
                time.sleep(delay)
                self.send_response(200)
                self.send_header("content-length", str(len(RULES)))
                self.end_headers()
                self.wfile.write(RULES)

            def log_message(self, *args):
                pass

        self.server = h.LoopbackHttpServer(Handler)
        self.port = self.server.port

    def close(self):
        self.server.close()


def cluster(name, port):
    return {"name": name, "connect_timeout": "1s", "type": "STATIC", "load_assignment": {"cluster_name": name, "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def waf_envoy(workdir, artifacts, upstream, v8_rules, thaw_rules, snapshots=None):
    """One Envoy: V8 (rules from cluster `rules-v8`) and thaw (cluster `rules-thaw`) listeners.
    `snapshots`: a dict for thaw's `snapshots` setting; the tenants are then snapshotted."""
    wasm = h.GUESTS / "waf-filter.wasm"
    module = artifacts.signed("waf-filter")
    v8 = {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "waf", "root_id": "",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "rules-v8"},
                   "vm_config": {"vm_id": "waf", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}}}}
    thaw_config = {
        "trusted_keys": [str(artifacts.public_key)],
        "tenant_from": {"header": "x-tenant-id"},
        "tenants": {name: {"module": str(module), "plugin_config": "rules-thaw", "isolation": isolation}
                    for name, isolation in THAW_TENANTS.items()},
    }
    if snapshots:
        source = Path(workdir) / "waf-filter.wasm"
        source.write_bytes(wasm.read_bytes())
        artifacts.sign(source)
        thaw_config["snapshots"] = snapshots
        for tenant in thaw_config["tenants"].values():
            tenant["snapshot"] = {"source": str(source)}
    thaw = h.thaw_filter(thaw_config)
    v8_port, thaw_port, admin = h.free_port(), h.free_port(), h.free_port()
    config = h.envoy_config([v8], upstream.port, v8_port, admin)
    second = copy.deepcopy(config["static_resources"]["listeners"][0])
    second["name"] = "thaw"
    second["address"]["socket_address"]["port_value"] = thaw_port
    hcm = second["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [thaw] + hcm["http_filters"][1:]
    config["static_resources"]["listeners"].append(second)
    config["static_resources"]["clusters"] += [cluster("rules-v8", v8_rules.port), cluster("rules-thaw", thaw_rules.port)]
    envoy = h.Envoy(None, upstream, workdir, config_text=json.dumps(config), port=v8_port, admin_port=admin, concurrency=2)
    return envoy, v8_port, thaw_port


def get(port, path, tenant=None):
    """(status, body, the x-waf* headers the upstream saw) of one GET."""
    headers = {"x-tenant-id": tenant} if tenant else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class InitCalls(unittest.TestCase):
    def setUp(self):
        self.dir = h.workdir()
        self.artifacts = h.Artifacts(self.dir)
        self.upstream = h.Upstream()

    def tearDown(self):
        self.upstream.close()
        h.cleanup(self.dir)

    def upstream_waf_headers(self, path):
        seen = [s for s in self.upstream.seen if s["path"] == path]
        return sorted((k, v) for k, v in seen[-1]["headers"].items() if k.startswith("x-waf")) if seen else None

    def test_rules_fetched_during_init_enforce_in_both_hosts_and_are_fetched_once_per_tenant(self):
        v8_rules, thaw_rules = RulesServer(), RulesServer()
        envoy, v8_port, thaw_port = waf_envoy(self.dir, self.artifacts, self.upstream, v8_rules, thaw_rules)
        try:
            with envoy:
                # Both hosts have their rules once /admin is blocked (bounded wait).
                targets = [(v8_port, None)] + [(thaw_port, t) for t in THAW_TENANTS]
                self.assertTrue(wait_until(lambda: all(get(p, "/admin", t)[0] == 403 for p, t in targets)), envoy.output()[-3000:])
                for port, tenant in targets:
                    for i in range(5):
                        self.assertEqual(get(port, f"/admin/{i}", tenant)[0], 403, (port, tenant))
                        self.assertEqual(get(port, f"/secret?{i}", tenant)[0], 403, (port, tenant))
                        path = f"/ok/{port}/{tenant}/{i}"
                        self.assertEqual(get(port, path, tenant)[0], 200, (port, tenant))
                        self.assertEqual(self.upstream_waf_headers(path), [("x-waf-rules", "2")], (port, tenant))
                # thaw asked once per tenant (its root instance), though per_request served each
                # request from a fresh instance: they replayed the recorded answer.
                self.assertEqual(thaw_rules.calls, ["/rules"] * len(THAW_TENANTS), thaw_rules.calls)
                self.assertGreaterEqual(len(v8_rules.calls), 1)
        finally:
            v8_rules.close()
            thaw_rules.close()

    def test_with_snapshots_the_snapshot_is_taken_after_the_answers_and_a_new_process_resumes_it(self):
        """Snapshots configured: the tenant's init cannot be snapshotted at load (its calls are
        unanswered); it is snapshotted once they are answered, before any request, and a second
        Envoy resumes the stored snapshot: it serves the rules without asking for them."""
        key = Path(self.dir) / "snapshot.key"
        key.write_bytes(bytes(range(32)))
        settings = {"dir": str(Path(self.dir) / "snapshots"), "key": str(key)}
        for run in ("first", "second"):
            v8_rules, thaw_rules = RulesServer(), RulesServer()
            envoy, v8_port, thaw_port = waf_envoy(self.dir, self.artifacts, self.upstream, v8_rules, thaw_rules, settings)
            try:
                with envoy:
                    for tenant in THAW_TENANTS:
                        self.assertTrue(wait_until(lambda: get(thaw_port, "/admin", tenant)[0] == 403), envoy.output()[-3000:])
                        for i in range(5):
                            path = f"/ok/{run}/{tenant}/{i}"
                            self.assertEqual(get(thaw_port, path, tenant)[0], 200)
                            self.assertEqual(self.upstream_waf_headers(path), [("x-waf-rules", "2")])
                    out = envoy.output()
                    if run == "first":
                        self.assertIn("stored its snapshot", out)
                        self.assertEqual(thaw_rules.calls, ["/rules"] * len(THAW_TENANTS))
                    else:
                        self.assertIn("resumed stored snapshot", out)
                        self.assertEqual(thaw_rules.calls, [], "a resumed snapshot asked for its rules again")
            finally:
                v8_rules.close()
                thaw_rules.close()

    def test_requests_before_the_answer_are_denied_and_counted_then_served(self):
        v8_rules, thaw_rules = RulesServer(), RulesServer(delay_s=2.0)
        envoy, v8_port, thaw_port = waf_envoy(self.dir, self.artifacts, self.upstream, v8_rules, thaw_rules)
        try:
            with envoy:
                status, body = get(thaw_port, "/ok/early", "waf-fresh")
                self.assertEqual(status, 503, body)
                self.assertIn(b"initializing", body)
                self.assertIsNone(self.upstream_waf_headers("/ok/early"), "an unready tenant's request reached the upstream")
                self.assertTrue(wait_until(lambda: (envoy.metric("envoy_thaw_wasm_tenant_not_ready_total", "waf-fresh") or 0) >= 1, 5),
                                envoy.stats()[-2000:])
                # Once the slow answer is in, the same tenant enforces its rules.
                self.assertTrue(wait_until(lambda: get(thaw_port, "/admin", "waf-fresh")[0] == 403, 10), envoy.output()[-3000:])
                self.assertEqual(get(thaw_port, "/ok/late", "waf-fresh")[0], 200)
                self.assertEqual(self.upstream_waf_headers("/ok/late"), [("x-waf-rules", "2")])
        finally:
            v8_rules.close()
            thaw_rules.close()


if __name__ == "__main__":
    unittest.main()
