"""Enforcement: a request the guest denies never reaches the upstream, in thaw as in Envoy's Wasm
filter (V8). The decision guest (examples/decision-filter) runs on a V8 listener and on a thaw
listener (tenants `per-request` and `pooled`) of one Envoy; a deterministic matrix of decision
phases, callouts (HTTP, gRPC; answering fast or slow), bodies (content-length, chunked, chunked
with trailers; in a burst or spread out) and verdicts runs on all three. Checked: the invariant at
the upstream in every host, and that the client and the upstream see in thaw what they see in V8.
Also: a grpcio client denied with a gRPC status, thaw's fail-closed reply to a gRPC request, and
callout tokens on a pooled instance (one worker) across requests that abandon their calls."""

import itertools
import time
import unittest
from concurrent import futures

import enforcement_support as es

BURST = (0, 0, 0)
SPREAD = (0, 0.15, 0.15)  # the body ends ~300 ms after the headers: a 120 ms answer comes during it
PIECES = (b"a" * 1000, b"b" * 1000, b"c" * 1000)
BODIES = {
    "content-length": {"body_mode": "length"},
    "chunked": {"body_mode": "chunked"},
    "chunked+trailers": {"body_mode": "chunked", "trailers": [("x-client-trailer", "t1")]},
}
# (phase, callout) points where the request side decides.
REQUEST_DECISION_POINTS = [
    ("request-headers", "none"),
    ("call-response", "http"),
    ("grpc-response", "grpc"),
    ("request-body", "none"),
    ("request-body", "http"),
    ("request-trailers", "none"),
    ("request-trailers", "grpc"),
]
CALL_DELAYS_MS = (0, 120, 300)


def matrix_cases():
    cases = []
    for (phase, call), (body_name, body), schedule, verdict in itertools.product(
            REQUEST_DECISION_POINTS, BODIES.items(), (BURST, SPREAD), ("deny", "allow")):
        for delay in CALL_DELAYS_MS if call != "none" else (0,):
            case = es.Case(phase, verdict, call, delay, pieces=PIECES, delays=schedule, **body)
            # Where the callout answers about when the trailers arrive, V8's outcome is itself random.
            if not (case.body_lost_in_a_v8_race() and (delay, schedule) in ((0, BURST), (300, SPREAD))):
                cases.append(case)
    for phase, call, verdict in itertools.product(("request-headers", "call-response"), ("none", "http"), ("deny", "allow")):
        for delay in (0, 300):
            cases.append(es.Case(phase, verdict, call, delay, method="GET"))
    for (phase, call), chunked, verdict in itertools.product(
            [("response-headers", "none"), ("response-headers", "http"), ("response-body", "none")], (False, True), ("deny", "allow")):
        for delay in CALL_DELAYS_MS if call != "none" else (0,):
            cases.append(es.Case(phase, verdict, call, delay, method="GET", upstream_chunked=chunked,
                                 extra_headers=[("x-upstream-reply-lines", "40")]))
    return cases


def observe_all(env, cases, workers=16):
    """Sends every case to every host concurrently; returns {(case index, host): observation}."""
    def one(index, host, port, tenant):
        test_id = f"m{index}-{host}-{time.monotonic_ns()}"
        return (index, host), test_id, es.send_case(port, cases[index], test_id, tenant)

    with futures.ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(one, i, *host) for i in range(len(cases)) for host in env.hosts()]
        answers = [job.result() for job in jobs]
    time.sleep(0.5)  # let anything still in flight to the upstream land before looking
    observations = {}
    for key, test_id, response in answers:
        records = env.upstream.seen(test_id)
        observations[key] = {"response": response, "client": es.client_view(response), "records": records,
                             "upstream": es.upstream_observation(cases[key[0]], records)}
    return observations


class EnforcementMatrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = es.EnforcementEnvoy(concurrency=2).start()
        cls.cases = matrix_cases()
        started = time.monotonic()
        cls.observations = observe_all(cls.env, cls.cases)
        print(f"\nenforcement matrix: {len(cls.cases)} cases x {len(cls.env.hosts())} hosts in {time.monotonic() - started:.1f} s")

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def violations(self, host):
        found = []
        for index, case in enumerate(self.cases):
            obs = self.observations[(index, host)]
            for problem in es.invariant_violations(case, obs["client"], obs["records"]):
                found.append(f"{case}: {problem}")
        return found

    def assert_no_violations(self, host):
        found = self.violations(host)
        self.assertEqual(found, [], f"{len(found)} of {len(self.cases)} cases break enforcement in {host}:\n" + "\n".join(found))

    def test_v8_enforces_every_decision(self):
        """Sanity: the matrix's expectations hold for Envoy's own Wasm filter."""
        self.assert_no_violations("v8")

    def test_thaw_per_request_enforces_every_decision(self):
        self.assert_no_violations("thaw-per-request")

    def test_thaw_pooled_enforces_every_decision(self):
        self.assert_no_violations("thaw-pooled")

    def assert_same_as_v8(self, host, what):
        differences = []
        for index, case in enumerate(self.cases):
            v8, thaw = self.observations[(index, "v8")][what], self.observations[(index, host)][what]
            if v8 != thaw:
                differences.append(f"{case}:\n  v8:   {v8}\n  {host}: {thaw}")
        self.assertEqual(differences, [], f"{len(differences)} of {len(self.cases)} cases differ ({what}):\n" + "\n".join(differences))

    def test_thaw_per_request_client_sees_what_v8_client_sees(self):
        self.assert_same_as_v8("thaw-per-request", "client")

    def test_thaw_pooled_client_sees_what_v8_client_sees(self):
        self.assert_same_as_v8("thaw-pooled", "client")

    def test_thaw_per_request_upstream_sees_what_v8_upstream_sees(self):
        self.assert_same_as_v8("thaw-per-request", "upstream")

    def test_thaw_pooled_upstream_sees_what_v8_upstream_sees(self):
        self.assert_same_as_v8("thaw-pooled", "upstream")


class SingleBehaviours(unittest.TestCase):
    """Behaviours the matrix also covers, one request each, so a failure names its cause."""

    @classmethod
    def setUpClass(cls):
        cls.env = es.EnforcementEnvoy(concurrency=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def each_host(self, case):
        out = {}
        for host, port, tenant in self.env.hosts():
            test_id = f"s-{host}-{time.monotonic_ns()}"
            response = es.send_case(port, case, test_id, tenant)
            time.sleep(0.1)
            out[host] = (es.client_view(response), self.env.upstream.seen(test_id))
        return out

    def test_an_allowed_request_carries_the_guests_headers_and_an_empty_one_only_in_v8(self):
        """The guest adds `x-decision` and an empty-valued `x-decision-empty`. V8 carries both;
        thaw answers the empty one OK and cannot carry it (documented difference: Envoy 1.40's
        dynamic-module ABI removes a header set to an empty value and refuses an empty add)."""
        for call in ("none", "http"):
            seen = self.each_host(es.Case("call-response", "allow", call, 0, method="GET"))
            for host, (client, records) in seen.items():
                with self.subTest(host=host, call=call):
                    self.assertEqual(client["status"], 200, client)
                    self.assertEqual(len(records), 1, records)
                    decision = sorted((k, v) for k, v in records[0]["headers"] if k.startswith("x-decision"))
                    expected = [("x-decision", "allowed"), ("x-decision-empty", "")] if host == "v8" else [("x-decision", "allowed")]
                    self.assertEqual(decision, expected)

    def test_response_callbacks_run_on_the_guests_own_local_reply(self):
        seen = self.each_host(es.Case("request-headers", "deny", method="GET"))
        for host, (client, records) in seen.items():
            with self.subTest(host=host):
                self.assertEqual(client["status"], 403, client)
                self.assertIn(("x-decision-saw-response", "1"), client["headers"])

    def test_a_slow_auth_denial_with_a_body_never_reaches_the_upstream(self):
        """The headline defect, alone: Pause in the request headers, the body flowing meanwhile."""
        case = es.Case("call-response", "deny", "http", 300, body_mode="length", pieces=[b"x" * 100])
        for host, (client, records) in self.each_host(case).items():
            with self.subTest(host=host):
                self.assertEqual(records, [])
                self.assertEqual(client["status"], 403, client)

    def test_a_slow_auth_denial_of_a_response_replaces_it(self):
        case = es.Case("response-headers", "deny", "http", 300, method="GET")
        for host, (client, records) in self.each_host(case).items():
            with self.subTest(host=host):
                self.assertEqual(client["status"], 403, client)
                self.assertNotIn(es.UPSTREAM_REPLY_MARK, client["body"])


class GrpcClients(unittest.TestCase):
    """A real grpcio client calling `test.Echo/Say` through each listener (HTTP/2 downstream)."""

    @classmethod
    def setUpClass(cls):
        import grpc
        cls.grpc = grpc
        cls.env = es.EnforcementEnvoy(concurrency=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def call(self, port, metadata, timeout=8):
        """(status code, details, reply or None)."""
        with self.grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            say = channel.unary_unary("/test.Echo/Say")
            try:
                return self.grpc.StatusCode.OK, "", say(b"hello", metadata=metadata, timeout=timeout)
            except self.grpc.RpcError as e:
                return e.code(), e.details(), None

    def decide(self, host, port, tenant, **headers):
        test_id = f"g-{host}-{time.monotonic_ns()}"
        metadata = [(k.replace("_", "-"), v) for k, v in headers.items()] + [("x-test-id", test_id)]
        if tenant:
            metadata.append(("x-tenant-id", tenant))
        code, details, reply = self.call(port, metadata)
        time.sleep(0.1)
        return code, details, reply, self.env.grpc.seen(test_id)

    def test_a_denial_with_grpc_status_7_is_permission_denied_with_the_message(self):
        for host, port, tenant in self.env.hosts():
            for call, delay in (("none", "0"), ("http", "0"), ("http", "300"), ("grpc", "300")):
                with self.subTest(host=host, call=call, delay=delay):
                    code, details, reply, upstream_calls = self.decide(
                        host, port, tenant, x_decide_phase="call-response", x_decide="deny", x_decide_call=call,
                        x_auth_delay_ms=delay, x_decide_grpc_status="7", x_decide_message="no entry for you")
                    self.assertEqual((code, details), (self.grpc.StatusCode.PERMISSION_DENIED, "no entry for you"))
                    self.assertEqual(upstream_calls, [], "the denied call reached the gRPC upstream")

    def test_the_grpc_status_is_the_guests_not_one_derived_from_the_http_status(self):
        """403 alone would map to PERMISSION_DENIED: the guest's UNAUTHENTICATED (16) must win."""
        for host, port, tenant in self.env.hosts():
            with self.subTest(host=host):
                code, details, _, upstream_calls = self.decide(
                    host, port, tenant, x_decide_phase="request-headers", x_decide="deny", x_decide_status="403",
                    x_decide_grpc_status="16", x_decide_message="who are you")
                self.assertEqual((code, details), (self.grpc.StatusCode.UNAUTHENTICATED, "who are you"))
                self.assertEqual(upstream_calls, [])

    def test_an_allowed_call_reaches_the_grpc_upstream(self):
        for host, port, tenant in self.env.hosts():
            for call in ("none", "http", "grpc"):
                with self.subTest(host=host, call=call):
                    code, details, reply, upstream_calls = self.decide(
                        host, port, tenant, x_decide_phase="call-response", x_decide="allow", x_decide_call=call,
                        x_auth_delay_ms="50")
                    self.assertEqual((code, details, reply), (self.grpc.StatusCode.OK, "", b"echo:hello"))
                    self.assertEqual(len(upstream_calls), 1, upstream_calls)
                    self.assertEqual(upstream_calls[0]["x-decision"], "allowed")

    def test_thaws_fail_closed_reply_to_a_grpc_request_is_unavailable(self):
        """chaos-filter traps; thaw's default on_error denies with 503, which gRPC maps to
        UNAVAILABLE. (V8 is not compared: its reply to a trapping guest is its own.)"""
        code, details, reply, upstream_calls = self.decide("thaw-chaos", self.env.thaw_port, "chaos", x_chaos="trap")
        self.assertNotEqual(code, self.grpc.StatusCode.OK)
        self.assertEqual(code, self.grpc.StatusCode.UNAVAILABLE, details)
        self.assertEqual(upstream_calls, [])


class PooledCalloutTokens(unittest.TestCase):
    """One worker, so the pooled tenant reuses one instance: requests that abandon their HTTP call
    (the stream ends while it is out) alternate with requests that wait for theirs. Envoy's tokens
    never repeat within a VM; a repeated token makes the Rust SDK panic ("duplicate token_id")."""

    ROUNDS = 15

    @classmethod
    def setUpClass(cls):
        cls.env = es.EnforcementEnvoy(concurrency=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_abandoned_calls_do_not_break_later_calls(self):
        sequence = []
        for round_ in range(self.ROUNDS):
            sequence.append(es.Case("request-headers", "allow", "http-abandon", 200, method="GET"))
            sequence.append(es.Case("request-headers", "deny", "http-abandon", 200, method="GET"))
            sequence.append(es.Case("call-response", "allow" if round_ % 2 else "deny", "http", 0, method="GET"))
        differences = []
        for index, case in enumerate(sequence):
            seen = {}
            for host, port, tenant in self.env.hosts():
                response = es.send_case(self.env.v8_port if host == "v8" else port, case, f"t{index}-{host}", tenant)
                seen[host] = (response["status"], response["body"])
            for host in ("thaw-per-request", "thaw-pooled"):
                if seen[host] != seen["v8"]:
                    differences.append(f"request {index} {case}: v8 {seen['v8']}, {host} {seen[host]}")
        self.assertEqual(differences, [], f"{len(differences)} of {len(sequence) * 2} thaw answers differ from V8:\n" + "\n".join(differences))


if __name__ == "__main__":
    unittest.main()
