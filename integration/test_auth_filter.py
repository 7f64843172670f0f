"""The example auth filter, signed and AOT-compiled, enforced by thaw inside a real Envoy 1.40.0."""

import unittest

import harness as h

TOKENS = {
    "acme": {"s3cret": "alice", "acme-admin": "root@acme"},
    "globex": {"hunter2": "bob"},
}


def tenants_config(artifacts, module, tenant_from, unknown_tenant="deny"):
    return {
        "trusted_keys": [str(artifacts.public_key)],
        "tenant_from": tenant_from,
        "unknown_tenant": unknown_tenant,
        "on_error": "deny",
        "tenants": {
            name: {"module": str(module), "plugin_config": {"tokens": tokens}} for name, tokens in TOKENS.items()
        },
    }


class TenantByHeader(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = h.workdir()
        cls.artifacts = h.Artifacts(cls.dir)
        cls.module = cls.artifacts.signed("auth-filter")
        cls.upstream = h.Upstream()
        config = tenants_config(cls.artifacts, cls.module, {"header": "x-tenant-id"})
        cls.envoy = h.Envoy([h.thaw_filter(config)], cls.upstream, cls.dir, concurrency=2).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.envoy.__exit__(None, None, None)
        cls.upstream.close()
        h.cleanup(cls.dir)

    def request(self, tenant, authorization=None, **headers):
        hdrs = {"x-tenant-id": tenant} if tenant else {}
        if authorization:
            hdrs["authorization"] = authorization
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        before = len(self.upstream.seen)
        status, _, body = self.envoy.request("/resource", hdrs)
        forwarded = self.upstream.seen[before:]
        return status, body, forwarded

    def test_missing_token_is_denied_before_the_upstream(self):
        status, body, forwarded = self.request("acme")
        self.assertEqual(status, 403)
        self.assertIn(b"missing bearer token", body)
        self.assertEqual(forwarded, [])

    def test_malformed_and_unknown_tokens_are_denied(self):
        for auth, reason in [("Basic czNjcmV0", b"malformed"), ("Bearer ", b"malformed"), ("Bearer nope", b"unknown")]:
            status, body, forwarded = self.request("acme", auth)
            self.assertEqual(status, 403, auth)
            self.assertIn(reason, body, auth)
            self.assertEqual(forwarded, [], auth)

    def test_a_valid_token_reaches_the_upstream_with_its_subject(self):
        status, _, forwarded = self.request("acme", "Bearer s3cret")
        self.assertEqual(status, 200)
        self.assertEqual(len(forwarded), 1)
        self.assertEqual(forwarded[0]["headers"]["x-auth-subject"], "alice")

    def test_a_client_sent_subject_is_overwritten(self):
        status, _, forwarded = self.request("acme", "Bearer acme-admin", x_auth_subject="mallory")
        self.assertEqual(status, 200)
        self.assertEqual(forwarded[0]["headers"]["x-auth-subject"], "root@acme")

    def test_tenants_never_see_each_others_tokens(self):
        self.assertEqual(self.request("globex", "Bearer s3cret")[0], 403)
        self.assertEqual(self.request("acme", "Bearer hunter2")[0], 403)
        status, _, forwarded = self.request("globex", "Bearer hunter2")
        self.assertEqual(status, 200)
        self.assertEqual(forwarded[0]["headers"]["x-auth-subject"], "bob")

    def test_interleaved_requests_over_both_workers_stay_per_tenant(self):
        for i in range(60):
            tenant, token, subject = [("acme", "s3cret", "alice"), ("globex", "hunter2", "bob")][i % 2]
            status, _, forwarded = self.request(tenant, f"Bearer {token}")
            self.assertEqual(status, 200)
            self.assertEqual(forwarded[0]["headers"]["x-auth-subject"], subject)

    def test_unknown_or_missing_tenant_is_denied(self):
        for tenant in ["initech", None]:
            status, body, forwarded = self.request(tenant, "Bearer s3cret")
            self.assertEqual(status, 403)
            self.assertIn(b"unknown tenant", body)
            self.assertEqual(forwarded, [])

    def test_the_guest_logs_into_envoys_log(self):
        self.assertIn("wasm [acme]: auth-filter: configured with 2 tokens", self.envoy.output())
        self.assertIn("Dynamic module ABI version v0.2.0 matched", self.envoy.output())


class UnknownTenantAllowed(unittest.TestCase):
    def test_unknown_tenants_pass_through_untouched(self):
        d = h.workdir()
        try:
            artifacts = h.Artifacts(d)
            module = artifacts.signed("auth-filter")
            upstream = h.Upstream()
            config = tenants_config(artifacts, module, {"header": "x-tenant-id"}, unknown_tenant="allow")
            with h.Envoy([h.thaw_filter(config)], upstream, d) as envoy:
                status, _, _ = envoy.request("/", {"x-tenant-id": "initech", "x-auth-subject": "mallory"})
                self.assertEqual(status, 200)
                self.assertEqual(upstream.seen[-1]["headers"]["x-auth-subject"], "mallory")
                # Known tenants are still enforced.
                self.assertEqual(envoy.request("/", {"x-tenant-id": "acme"})[0], 403)
            upstream.close()
        finally:
            h.cleanup(d)


class TenantByRoute(unittest.TestCase):
    def test_each_route_selects_its_tenant(self):
        d = h.workdir()
        try:
            artifacts = h.Artifacts(d)
            module = artifacts.signed("auth-filter")
            upstream = h.Upstream()
            config = tenants_config(artifacts, module, {"route": True})
            routes = [
                {"match": {"prefix": "/acme"}, "route": {"cluster": "upstream"}, "typed_per_filter_config": h.route_tenant("acme")},
                {"match": {"prefix": "/globex"}, "route": {"cluster": "upstream"}, "typed_per_filter_config": h.route_tenant("globex")},
                {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
            ]
            with h.Envoy([h.thaw_filter(config)], upstream, d, routes=routes) as envoy:
                # The tenant header means nothing here: the route decides.
                hdr = {"x-tenant-id": "globex"}
                self.assertEqual(envoy.request("/acme/x", {**hdr, "authorization": "Bearer s3cret"})[0], 200)
                self.assertEqual(upstream.seen[-1]["headers"]["x-auth-subject"], "alice")
                self.assertEqual(envoy.request("/acme/x", {"authorization": "Bearer hunter2"})[0], 403)
                self.assertEqual(envoy.request("/globex/y", {"authorization": "Bearer hunter2"})[0], 200)
                self.assertEqual(upstream.seen[-1]["headers"]["x-auth-subject"], "bob")
                status, _, body = envoy.request("/other", {"authorization": "Bearer s3cret"})
                self.assertEqual(status, 403)
                self.assertIn(b"unknown tenant", body)
            upstream.close()
        finally:
            h.cleanup(d)


if __name__ == "__main__":
    unittest.main()
