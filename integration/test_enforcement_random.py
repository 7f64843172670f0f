"""Randomized differential enforcement: seeded random requests (method, headers, bodies with
content-length or chunked in random pieces and pauses, trailers, decision phase, verdict, callout
and its delay) run against the decision guest under V8 and under thaw (tenants `per-request` and
`pooled`) in one Envoy, concurrently. What the client sees (status, headers but the volatile ones,
body) and what the upstream saw (whole requests: body, trailers, x-decision headers; and, where the
guest held the headers, whether anything arrived) must be identical, and no host may let a denied
request through. The first failure found is shrunk (fewer headers, smaller body, no trailers, no
delays, ...) by re-running it until it no longer shrinks, and printed.

THAW_RANDOM_SEED (default: random, printed), THAW_RANDOM_CASES (default 2000) and
THAW_RANDOM_BUDGET_S (default 90: no case starts after it) steer a run."""

import os
import random
import time
import unittest
from concurrent import futures

import enforcement_support as es

SEED = int(os.environ.get("THAW_RANDOM_SEED") or random.SystemRandom().randrange(2 ** 32))
CASES = int(os.environ.get("THAW_RANDOM_CASES") or 2000)
BUDGET_S = float(os.environ.get("THAW_RANDOM_BUDGET_S") or 90)
WORKERS = 24
SHRINK_ATTEMPTS = 80
SHRINK_BUDGET_S = 40

PHASES = ["request-headers", "request-body", "request-trailers", "call-response", "grpc-response",
          "response-headers", "response-body", "none"]
CALLS = ["none", "http", "grpc", "http-abandon"]
DELAYS_MS = [0, 5, 50, 200]
BODY_SIZES = [1, 7, 100, 1000, 4000, 20000]
PIECE_DELAYS = [0, 0, 0, 0.005, 0.02, 0.05]
HEADER_NAMES = ["x-r-alpha", "x-r-beta", "x-r-gamma", "accept", "user-agent", "content-type", "x-r-multi"]
TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-_.~"


def random_case(rng):
    phase = rng.choice(PHASES)
    call = rng.choice(CALLS)
    if phase == "grpc-response" and rng.random() < 0.7:
        call = "grpc"
    if phase == "call-response" and rng.random() < 0.7:
        call = "http"
    body_mode = rng.choice(["none", "length", "chunked"])
    pieces, delays, trailers = [], [], []
    if body_mode != "none":
        size = rng.choice(BODY_SIZES)
        cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.randint(0, 4)))) if size > 1 else []
        bounds = [0] + cuts + [size]
        fill = rng.choice(b"abcxyz")
        pieces = [bytes([fill]) * (b - a) for a, b in zip(bounds, bounds[1:])]
        delays = [rng.choice(PIECE_DELAYS) for _ in pieces]
        if body_mode == "chunked" and rng.random() < 0.4:
            trailers = [(f"x-trailer-{i}", "".join(rng.choice(TOKEN) for _ in range(rng.randint(1, 12))))
                        for i in range(rng.randint(1, 2))]
    extra = [(name, "".join(rng.choice(TOKEN) for _ in range(rng.randint(0, 20))))
             for name in rng.sample(HEADER_NAMES, rng.randint(0, 4))]
    if phase in es.RESPONSE_PHASES:
        extra.append(("x-upstream-reply-lines", str(rng.randint(1, 60))))
    case = es.Case(phase, rng.choice(["allow", "deny"]), call, rng.choice(DELAYS_MS),
                   method=rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"]), body_mode=body_mode,
                   pieces=pieces, delays=delays, trailers=trailers, extra_headers=extra,
                   upstream_chunked=phase in es.RESPONSE_PHASES and rng.random() < 0.5,
                   deny_status=rng.choice([None, 401, 403, 429]), deny_grpc_status=rng.choice([None, None, 7, 16]))
    if case.body_lost_in_a_v8_race():
        case.trailers = []
    return case


class Runner:
    """Sends cases to every host and judges them."""

    def __init__(self, env):
        self.env = env
        self.sent = 0

    def send(self, case, tag, hosts):
        """{host: (response, test id)} for `case` on `hosts`, sequentially."""
        out = {}
        for host, port, tenant in hosts:
            test_id = f"{tag}-{host}"
            out[host] = (es.send_case(port, case, test_id, tenant), test_id)
            self.sent += 1
        return out

    def observe(self, case, sent):
        return {host: {"client": es.client_view(response), "records": self.env.upstream.seen(test_id),
                       "upstream": es.upstream_observation(case, self.env.upstream.seen(test_id))}
                for host, (response, test_id) in sent.items()}

    @staticmethod
    def judge(case, observations):
        """The failures of one case: every difference from V8, every broken invariant."""
        failures = []
        for host, obs in observations.items():
            # A denied request let through breaks enforcement; an allowed one refused or lost is
            # an availability failure.
            kind = "enforcement" if case.denies() else "allowed-request"
            for problem in es.invariant_violations(case, obs["client"], obs["records"]):
                failures.append((host, kind, problem))
            if host != "v8":
                for what in ("client", "upstream"):
                    v8 = observations["v8"][what]
                    if obs[what] != v8:
                        failures.append((host, what, f"{difference_kind(v8, obs[what])}\n      v8:   {v8}\n      {host}: {obs[what]}"))
        return failures

    def rerun(self, case, tag, hosts):
        sent = self.send(case, tag, hosts)
        time.sleep(0.3)
        return self.judge(case, self.observe(case, sent))


def difference_kind(v8, thaw):
    """A one-line name for how two observations differ (for grouping failures)."""
    parts = []
    for key in sorted(set(v8) | set(thaw)):
        a, b = v8.get(key), thaw.get(key)
        if a == b:
            continue
        if key == "headers":
            names = sorted({k for k, _ in set(a) ^ set(b)})
            parts.append(f"headers differ in {names}")
        elif key == "whole_requests":
            parts.append(f"whole upstream requests {len(a)} vs {len(b)}" if len(a) != len(b) else
                         "upstream requests differ in " + str(sorted({k for x, y in zip(a, b) for k in x if x[k] != y[k]})))
        elif key == "body":
            parts.append("body differs")
        else:
            parts.append(f"{key} {a} vs {b}")
    return "; ".join(parts)


def shrink_candidates(case):
    """Smaller variants of `case`, most promising first."""
    if case.call != "none":
        yield case.copy(call="none")
    if case.delay_ms:
        yield case.copy(delay_ms=0)
    if case.trailers:
        yield case.copy(trailers=[])
        for i in range(len(case.trailers)):
            yield case.copy(trailers=case.trailers[:i] + case.trailers[i + 1:])
    for i in range(len(case.extra_headers)):
        yield case.copy(extra_headers=case.extra_headers[:i] + case.extra_headers[i + 1:])
    if case.body_mode != "none":
        yield case.copy(body_mode="none", pieces=[], delays=[], trailers=[])
        if case.body_mode == "chunked" and not case.trailers:
            yield case.copy(body_mode="length")
        if len(case.pieces) > 1:
            yield case.copy(pieces=[b"".join(case.pieces)], delays=[sum(case.delays)])
            yield case.copy(pieces=case.pieces[:-1], delays=case.delays[:-1])
        if any(len(p) > 1 for p in case.pieces):
            yield case.copy(pieces=[p[:max(1, len(p) // 2)] for p in case.pieces])
        if any(case.delays):
            yield case.copy(delays=[0] * len(case.delays))
    for field, plain in (("deny_status", None), ("deny_grpc_status", None), ("upstream_chunked", False)):
        if getattr(case, field) != plain:
            yield case.copy(**{field: plain})
    if case.method not in ("GET", "POST"):
        yield case.copy(method="POST" if case.body_mode != "none" else "GET")


def shrink(runner, case, hosts, keeps_failing, attempts_left, deadline):
    """Re-runs smaller variants of `case` while one still fails as `keeps_failing` (a predicate on
    a failure list) says; returns (smallest case, its failures, runs made)."""
    failures = runner.rerun(case, f"s{SEED}-{time.monotonic_ns()}", hosts)
    if not keeps_failing(failures):
        return case, failures, 1  # it did not fail so again on its own (it depended on earlier requests)
    attempts, progress = 1, True
    while progress and attempts < attempts_left and time.monotonic() < deadline:
        progress = False
        for candidate in shrink_candidates(case):
            if attempts >= attempts_left or time.monotonic() >= deadline:
                break
            attempts += 1
            candidate_failures = runner.rerun(candidate, f"s{SEED}-{time.monotonic_ns()}", hosts)
            if keeps_failing(candidate_failures):
                case, failures, progress = candidate, candidate_failures, True
                break
    return case, failures, attempts


def case_size(case):
    return (len(case.body()), len(case.extra_headers), len(case.trailers), case.delay_ms, sum(case.delays))


class RandomDifferential(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print(f"\nrandom enforcement: seed {SEED} (THAW_RANDOM_SEED={SEED} to repeat), up to {CASES} cases, budget {BUDGET_S:.0f} s")
        cls.env = es.EnforcementEnvoy(concurrency=2).start()
        cls.runner = Runner(cls.env)
        rng = random.Random(SEED)
        cls.cases = [random_case(rng) for _ in range(CASES)]
        started = time.monotonic()
        deadline = started + BUDGET_S
        hosts = cls.env.hosts()

        def one(index, host):
            if time.monotonic() >= deadline:
                return None
            return index, cls.runner.send(cls.cases[index], f"r{SEED}-{index}", [host])

        sent = {}
        with futures.ThreadPoolExecutor(WORKERS) as pool:
            jobs = [pool.submit(one, i, host) for i in range(len(cls.cases)) for host in hosts]
            for job in jobs:
                result = job.result()
                if result:
                    sent.setdefault(result[0], {}).update(result[1])
        time.sleep(0.5)
        cls.judged = {}
        for index, by_host in sent.items():
            if len(by_host) == len(hosts):  # cut by the budget midway: not judged
                case = cls.cases[index]
                cls.judged[index] = Runner.judge(case, cls.runner.observe(case, by_host))
        cls.elapsed = time.monotonic() - started
        print(f"random enforcement: {len(cls.judged)} cases ({cls.runner.sent} requests) ran in {cls.elapsed:.1f} s")

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_enough_cases_ran(self):
        self.assertGreaterEqual(len(self.judged), min(CASES, 500), "the time budget cut the run short")

    def test_v8_never_lets_a_denied_request_through(self):
        """Sanity for the generator's expectations: Envoy's own Wasm filter keeps the invariant."""
        broken = [(i, f) for i, failures in self.judged.items() for f in failures if f[0] == "v8"]
        self.assertEqual(broken, [], "\n".join(f"{self.cases[i]}: {f[2]}" for i, f in broken[:20]))

    def test_thaw_behaves_as_v8_in_every_random_case(self):
        failing = {i: failures for i, failures in self.judged.items() if failures}
        if not failing:
            return
        signatures = {}
        for failures in failing.values():
            for host, what, detail in failures:
                key = (host, what, detail.splitlines()[0][:160])
                signatures[key] = signatures.get(key, 0) + 1
        summary = "\n".join(f"  {count:5d} x {host} {what} {detail}" for (host, what, detail), count in
                            sorted(signatures.items(), key=lambda kv: -kv[1])[:30])
        # Shrink the smallest case that breaks enforcement (the security property), then the
        # smallest case showing any difference, each keeping its kind of failure while it shrinks.
        # A case that does not fail again on its own (it depended on earlier requests, as a pooled
        # instance's state does) gives way to the next smallest of its kind.
        def breaks_enforcement(fs):
            return any(what == "enforcement" and host != "v8" for host, what, _ in fs)

        def differs(fs):
            return any(host != "v8" for host, _, _ in fs)

        report = [f"seed {SEED}: {len(failing)} of {len(self.judged)} random cases fail.", "failure kinds:", summary]
        deadline = time.monotonic() + SHRINK_BUDGET_S
        for title, keeps_failing in (("breaks enforcement", breaks_enforcement), ("differs from V8", differs)):
            members = sorted((i for i, fs in failing.items() if keeps_failing(fs)), key=lambda i: case_size(self.cases[i]))
            for index in members[:5]:
                failing_hosts = {host for host, _, _ in failing[index] if host != "v8"}
                hosts = [h for h in self.env.hosts() if h[0] == "v8" or h[0] in failing_hosts]
                shrunk, failures, runs = shrink(self.runner, self.cases[index], hosts, keeps_failing,
                                                SHRINK_ATTEMPTS // 2, deadline)
                if keeps_failing(failures):
                    report.append(f"smallest case that {title} (from case {index}, after {runs} shrink runs):\n  {shrunk}")
                    report += [f"    [{host} {what}] {detail}" for host, what, detail in failures]
                    break
                report.append(f"case {index} ({title}) did not fail so again when re-run alone: {self.cases[index]}")
        self.fail("\n".join(report))


if __name__ == "__main__":
    unittest.main()
