"""Differential conformance: the conformance guest (proxy-wasm Rust SDK) runs under Envoy's own
`envoy.filters.http.wasm` (V8) and under thaw, in the same Envoy 1.40.0 process (one listener
each, same upstream), driven by the same requests. thaw serves the guest as two tenants, one
`pooled` and one `per_request`, and every area runs on both. What the client and the upstream
observe (status, headers both ways, bodies) must be identical, except for differences listed, with
their reason, in CONFORMANCE.md (and in KNOWN_DIFFERENCES below). Earlier filters leave dynamic
metadata and filter state, and the route carries metadata, for the `metadata` area."""

import copy
import json
import time
import unittest

import harness as h

# Response headers that legitimately differ between any two listeners or requests.
VOLATILE = {"date", "server", "x-envoy-upstream-service-time", "x-request-id"}

# area -> why V8 and thaw may differ there (mirrored in CONFORMANCE.md).
KNOWN_DIFFERENCES = {}

# Documented differences that are normalised away before comparing (mirrored in CONFORMANCE.md):
# Envoy's Wasm host appends Envoy's response-code details to a failed gRPC call's message.
V8_NORMALISE = {"grpc-fail": ("{via_upstream}", "")}

# Areas where the guest replies locally after the request headers went upstream: whether the
# upstream recorded the aborted request is a race in either host, so only the client side counts.
UPSTREAM_RACE = {"local-request-body"}

REQUESTS = [
    ("headers", "GET", "/h", {"x-conf-replace": "original", "x-conf-remove": "bye", "x-conf-multi": "a"}, None),
    ("pairs", "GET", "/pairs", {"x-conf-drop": "1", "x-conf-keep": "2"}, None),
    ("body", "POST", "/b", {"content-type": "text/plain"}, b"hello body, in pieces"),
    ("buffer-edits", "POST", "/e", {"content-type": "text/plain"}, b"abcdef"),
    ("response-body", "GET", "/rb", {}, None),
    ("maps", "POST", "/maps", {"content-type": "text/plain"}, b"body"),
    ("local-request-headers", "GET", "/l1", {}, None),
    ("local-request-body", "POST", "/l2", {"content-type": "text/plain"}, b"x" * 1000),
    ("local-response-headers", "GET", "/l3", {}, None),
    ("properties", "GET", "/p/x?q=1", {}, None),
    ("metadata", "GET", "/md", {}, None),
    ("shared-data", "GET", "/s", {}, None),
    ("shared-data", "GET", "/s", {}, None),
    ("queue", "GET", "/q", {}, None),
    ("metrics", "GET", "/m", {}, None),
    ("log", "GET", "/log", {}, None),
    ("foreign", "GET", "/f", {}, None),
    ("ticks", "GET", "/t", {}, None),
    ("root-call-check", "GET", "/rc", {}, None),
    ("queue-ready", "GET", "/qr", {}, None),
    ("queue-ready-check", "GET", "/qr2", {}, None),
    ("http-call", "GET", "/call", {}, None),
    ("http-call-bad-cluster", "GET", "/call2", {}, None),
    ("grpc-call", "GET", "/g", {}, None),
    ("grpc-fail", "GET", "/g2", {}, None),
    ("grpc-stream", "GET", "/g3", {}, None),
]


class GrpcServer:
    """A real gRPC server (grpcio) on loopback: conf.Echo/Say upper-cases the request bytes and
    returns the `x-conf-meta` metadata it saw; conf.Echo/Fail aborts with INVALID_ARGUMENT;
    conf.Echo/Chat (bidirectional stream) answers every message upper-cased."""

    def __init__(self):
        import grpc
        from concurrent import futures

        def say(request, context):
            meta = dict(context.invocation_metadata()).get("x-conf-meta", "")
            return request.upper() + b" meta=" + meta.encode()

        def fail(request, context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused by the test server")

        def chat(requests, context):
            for request in requests:
                yield request.upper()

        handler = grpc.method_handlers_generic_handler("conf.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)


def grpc_cluster(port):
    return {
        "name": "grpc",
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": "grpc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


def v8_filter(wasm, configuration="{}"):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "conf", "root_id": "",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                   "vm_config": {"vm_id": "conf", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}}}}


# thaw's tenants of the conformance guest: one per isolation mode; every area runs on both.
THAW_TENANTS = {"conf": "pooled", "conf-fresh": "per_request"}


def thaw_filter(artifacts, module, configuration="{}"):
    return h.thaw_filter({
        "trusted_keys": [str(artifacts.public_key)],
        "tenant_from": {"header": "x-tenant-id"},
        "tenants": {name: {"module": str(module), "plugin_config": configuration, "isolation": isolation}
                    for name, isolation in THAW_TENANTS.items()},
    })


# Filters ahead of the guest's in both listeners: what the `metadata` area reads.
METADATA_FILTERS = [
    {"name": "envoy.filters.http.set_metadata", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
        "metadata": [{"metadata_namespace": "conf.meta", "value": {"user": "alice", "level": 3, "admin": True}}]}},
    {"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [{"object_key": "conf.state", "factory_key": "envoy.string", "format_string": {"text_format_source": {"inline_string": "from-an-earlier-filter"}}}]}},
]
ROUTE_METADATA = {"filter_metadata": {"conf.route": {"owner": "team-a"}}}


def two_listener_config(upstream, v8, thaw, grpc_port=None):
    """One Envoy, two listeners: V8 on the first, thaw on the second (and a gRPC cluster). HTTP/1.1
    trailers are enabled both ways, for the trailer area."""
    v8_port, thaw_port, admin = h.free_port(), h.free_port(), h.free_port()
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}, "metadata": ROUTE_METADATA}]
    config = h.envoy_config(METADATA_FILTERS + [v8], upstream.port, v8_port, admin, routes)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_protocol_options"] = {"enable_trailers": True}
    config["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
        }
    }
    if grpc_port:
        config["static_resources"]["clusters"].append(grpc_cluster(grpc_port))
    second = copy.deepcopy(config["static_resources"]["listeners"][0])
    second["name"] = "thaw"
    second["address"]["socket_address"]["port_value"] = thaw_port
    hcm = second["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = METADATA_FILTERS + [thaw] + hcm["http_filters"][len(METADATA_FILTERS) + 1:]
    config["static_resources"]["listeners"].append(second)
    return config, v8_port, thaw_port, admin


class Conformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = h.workdir()
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.signed("conformance-filter")
        cls.wasm = h.GUESTS / "conformance-filter.wasm"
        cls.upstream = h.Upstream()
        cls.grpc = GrpcServer()
        config, cls.v8_port, cls.thaw_port, admin = two_listener_config(
            cls.upstream, v8_filter(cls.wasm), thaw_filter(cls.artifacts, cls.module), cls.grpc.port)
        cls.envoy = h.Envoy(None, cls.upstream, cls.dir, config_text=json.dumps(config), port=cls.v8_port,
                            admin_port=admin, concurrency=1, log_level="debug").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.envoy.__exit__(None, None, None)
        cls.upstream.close()
        cls.grpc.close()
        h.cleanup(cls.dir)

    def observe(self, port, area, method, path, headers, body, tenant="conf"):
        before = len(self.upstream.seen)
        conn = h.http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path, body=body, headers={"x-conf": area, "x-tenant-id": tenant, **headers})
        r = conn.getresponse()
        response_body = r.read()
        conn.close()
        # Only this request's own upstream traffic: the guest's root-context call (from a tick) and
        # an aborted request of an earlier area may land in any window.
        seen = [s for s in self.upstream.seen[before:] if s["headers"].get("x-conf") == area]
        return {
            "status": r.status,
            "headers": sorted((k.lower(), v) for k, v in r.getheaders() if k.lower() not in VOLATILE),
            "body": response_body.decode(errors="replace"),
            "upstream": [
                {"headers": sorted((k, v) for k, v in s["headers"].items() if k.startswith("x-conf")), "body": s["body"].decode(errors="replace")}
                for s in seen
            ],
        }

    def test_every_area_is_observed_identically(self):
        differences = []
        for area, method, path, headers, body in REQUESTS:
            if area == "queue-ready-check":
                time.sleep(0.3)  # delivery is asynchronous in both hosts
            if area == "root-call-check":
                self.wait_for_root_calls()
            v8 = json.loads(json.dumps(self.observe(self.v8_port, area, method, path, headers, body)))
            if area in V8_NORMALISE:
                old, new = V8_NORMALISE[area]
                v8 = json.loads(json.dumps(v8).replace(old, new))
            if area in UPSTREAM_RACE:
                v8.pop("upstream")
            for tenant, isolation in THAW_TENANTS.items():
                thaw = json.loads(json.dumps(self.observe(self.thaw_port, area, method, path, headers, body, tenant)))
                if area in UPSTREAM_RACE:
                    thaw.pop("upstream")
                if v8 != thaw and area not in KNOWN_DIFFERENCES:
                    differences.append(f"{area} ({isolation}):\n  v8:   {v8}\n  thaw: {thaw}")
        self.assertEqual(differences, [], "\n".join(differences))

    def test_metadata_other_filters_left_is_read_as_in_v8(self):
        """The test has teeth: V8 reads the values (so thaw's equal answer above means something)."""
        body = self.observe(self.v8_port, "metadata", "GET", "/md", {}, None)["body"]
        self.assertIn("metadata.filter_metadata.conf.meta.user=616c696365", body)  # "alice"
        self.assertIn("xds.route_metadata.filter_metadata.conf.route.owner=7465616d2d61", body)  # "team-a"

    def observe_trailers(self, port, tenant="conf"):
        """A chunked request with a trailer, asking the upstream for a chunked response with one;
        raw HTTP/1.1, since http.client carries no trailers. Returns what both sides saw."""
        import socket
        before = len(self.upstream.seen)
        request = (b"POST /trailers HTTP/1.1\r\nhost: x\r\nx-conf: trailers\r\nx-tenant-id: " + tenant.encode() + b"\r\nx-want-trailers: 1\r\n"
                   b"transfer-encoding: chunked\r\ntrailer: x-client-trailer\r\n\r\n5\r\nhello\r\n0\r\nx-client-trailer: c1\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        response_trailers = sorted(l for l in rest.split(b"\r\n0\r\n", 1)[-1].decode().split("\r\n") if l)
        seen = [s for s in self.upstream.seen[before:] if s["headers"].get("x-conf") == "trailers"]
        return {
            "status": head.split(b" ")[1].decode(),
            "response_trailers": response_trailers,
            "upstream_trailers": [sorted(s["trailers"].items()) for s in seen],
            "upstream_body": [s["body"].decode() for s in seen],
        }

    def test_trailers_are_observed_identically(self):
        v8 = self.observe_trailers(self.v8_port)
        for tenant in THAW_TENANTS:
            thaw = self.observe_trailers(self.thaw_port, tenant)
            self.assertEqual(v8, thaw, tenant)
        # The test has teeth: the guest's trailer edits are there.
        self.assertIn(("x-conf-req-trailer", "added"), thaw["upstream_trailers"][0])
        self.assertIn("x-conf-resp-trailer: t1-seen", thaw["response_trailers"])

    def wait_for_root_calls(self, timeout=10):
        """The calls a tick makes finish asynchronously: wait (bounded) until both hosts saw both."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = [(self.v8_port, "conf")] + [(self.thaw_port, tenant) for tenant in THAW_TENANTS]
            bodies = [self.observe(p, "root-call-check", "GET", "/rc", {}, None, t)["body"] for p, t in targets]
            if all("status=200" in b and "root_grpc=status=0" in b for b in bodies):
                return
            time.sleep(0.2)

    def test_guest_metrics_are_envoy_stats_in_both_hosts(self):
        """A guest counter and gauge move identically in both hosts. Envoy's Wasm filter names the
        stat as the guest does (`conf_requests`); thaw labels it by tenant and name (documented)."""
        import re

        def values():
            time.sleep(1.2)  # stats flush
            stats = self.envoy.stats()
            def get(pattern):
                m = re.search(pattern, stats, re.M)
                return float(m.group(1)) if m else None
            return {
                "v8_counter": get(r'^conf_requests\{\} (\S+)$'),
                "v8_gauge": get(r'^conf_gauge\{\} (\S+)$'),
                "thaw_counter": get(r'^envoy_thaw_wasm_guest_counter\{tenant="conf",name="conf_requests"\} (\S+)$'),
                "thaw_gauge": get(r'^envoy_thaw_wasm_guest_gauge\{tenant="conf",name="conf_gauge"\} (\S+)$'),
            }

        for port in (self.v8_port, self.thaw_port):
            self.observe(port, "metrics", "GET", "/m", {}, None)
        before = values()
        for _ in range(3):
            for port in (self.v8_port, self.thaw_port):
                self.observe(port, "metrics", "GET", "/m", {}, None)
        after = values()
        self.assertEqual(after["v8_counter"] - before["v8_counter"], 3, after)
        self.assertEqual(after["thaw_counter"] - before["thaw_counter"], 3, after)
        self.assertEqual((after["v8_gauge"], after["thaw_gauge"]), (7, 7), after)

    def test_guest_logs_reach_envoys_log_from_both_hosts(self):
        for port in (self.v8_port, self.thaw_port):
            self.observe(port, "log", "GET", "/log", {}, None)
        out = self.envoy.output()
        self.assertGreaterEqual(out.count("conf info line"), 2, out[-3000:])
        self.assertGreaterEqual(out.count("conf warn line"), 2)


class ConfigRejection(unittest.TestCase):
    def test_a_guest_rejecting_its_configuration_rejects_the_config_in_both_hosts(self):
        d = h.workdir()
        try:
            artifacts = h.Artifacts(d)
            module = artifacts.signed("conformance-filter")
            wasm = h.GUESTS / "conformance-filter.wasm"
            for filt in (v8_filter(wasm, "reject"), thaw_filter(artifacts, module, "reject")):
                ok, output = h.validate(h.envoy_config([filt], 1, h.free_port(), h.free_port()), d)
                self.assertFalse(ok, output[-2000:])
        finally:
            h.cleanup(d)


if __name__ == "__main__":
    unittest.main()
