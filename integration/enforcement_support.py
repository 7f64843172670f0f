"""Shared pieces of the enforcement suites (test_enforcement.py, test_enforcement_random.py).

One Envoy 1.40.0 runs the decision guest (examples/decision-filter) under Envoy's own Wasm filter
(V8) on one listener and under thaw on another, where two tenants load the same module with
`isolation: per_request` and `isolation: pooled` (and a `chaos` tenant runs chaos-filter). Behind
them: a recording HTTP upstream (what reached it, per `x-test-id`, and whether the request arrived
complete), an HTTP auth service answering after `x-auth-delay-ms` with the verdict it was sent,
and a grpcio server with `auth.Decider/Check` (the gRPC auth service) and `test.Echo/Say` (a gRPC
upstream, recording the `x-test-id` of every call). A raw HTTP/1.1 client sends bodies with
content-length or chunked (with trailers), piece by piece with pauses, and reads what comes back.
"""

import http.server
import json
import os
import select
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import harness as h
from test_conformance import two_listener_config, v8_filter

# THAW_RELEASE_DIR: run the suites against another build of thaw (its libthaw.so and thaw CLI).
if os.environ.get("THAW_RELEASE_DIR"):
    h.RELEASE = Path(os.environ["THAW_RELEASE_DIR"]).resolve()
    h.THAW = h.RELEASE / "thaw"

THAW_TENANTS = ("per-request", "pooled")
ROUTE_TIMEOUT = "5s"

# Response headers that differ between any two listeners or requests whatever the filter does:
# the date, the server name, the upstream's timing. Everything else the client sees is compared,
# content-length and connection included: every request says `connection: close`, so Envoy's
# answer to it does not depend on timing, and equal bodies have equal lengths.
VOLATILE_RESPONSE_HEADERS = {"date", "server", "x-envoy-upstream-service-time", "x-request-id"}


class QuietServer(http.server.ThreadingHTTPServer):
    """Envoy resets connections of denied requests and abandoned calls: not worth a traceback.
    The listen backlog is socketserver's 5 by default: with dozens of concurrent cases whose
    answers are delayed, connection attempts beyond it were dropped and a callout could fail
    (Envoy answers it 503), a failure of the test's auth service, not of a host."""
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass


class RecordingUpstream:
    """HTTP/1.1 upstream. For every request: a record under its `x-test-id`, made when the headers
    arrive (`reached`) and completed (`complete`, `body`, `trailers`) only when the whole request
    arrived (content-length satisfied, or the chunked terminator read). Answers 200 with a body of
    `x-upstream-reply-lines` lines (default 2), chunked in pieces if `x-upstream-chunked` is set."""

    def __init__(self):
        self.records = {}
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_request_body(self, record):
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    body = b""
                    while True:
                        line = self.rfile.readline()
                        if not line:
                            return None
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:
                                line = self.rfile.readline()
                                if not line:
                                    return None
                                if line in (b"\r\n", b"\n"):
                                    return body
                                name, _, value = line.decode().partition(":")
                                record["trailers"][name.strip().lower()] = value.strip()
                        piece = self.rfile.read(size)
                        if len(piece) < size:
                            return None
                        body += piece
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                return body if len(body) == length else None

            def _answer(self):
                test_id = self.headers.get("x-test-id", "")
                record = {"path": self.path, "method": self.command,
                          "headers": [(k.lower(), v) for k, v in self.headers.items()],
                          "reached": True, "complete": False, "body": b"", "trailers": {}}
                with upstream.lock:
                    upstream.records.setdefault(test_id, []).append(record)
                try:
                    body = self._read_request_body(record)
                except (OSError, ValueError):
                    body = None
                if body is None:
                    self.close_connection = True
                    return
                record["body"] = body
                record["complete"] = True
                lines = int(self.headers.get("x-upstream-reply-lines") or 2)
                reply = b"".join(b"upstream reply line %d\n" % i for i in range(lines))
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                if self.headers.get("x-upstream-chunked"):
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(reply), 20):
                        piece = reply[i:i + 20]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.002)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except OSError:
                    self.close_connection = True  # the proxy reset the request (a denial)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self, test_id):
        with self.lock:
            return [dict(r) for r in self.records.get(test_id, [])]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class AuthService:
    """The HTTP auth service: GET /check answers, after `x-auth-delay-ms` ms, 200 with the body
    `x-auth-verdict` asked for (`allow` / `deny`)."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                time.sleep(min(int(self.headers.get("x-auth-delay-ms") or 0), 5000) / 1000)
                verdict = (self.headers.get("x-auth-verdict") or "deny").encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(verdict)))
                self.end_headers()
                try:
                    self.wfile.write(verdict)
                except OSError:
                    pass  # an abandoned call: Envoy no longer waits for the answer

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class GrpcServices:
    """grpcio on loopback: `auth.Decider/Check` answers its request bytes (the verdict) after the
    `x-auth-delay-ms` metadata; `test.Echo/Say` is a gRPC upstream that records every call's
    `x-test-id` and decision metadata and answers `echo:` + the request."""

    def __init__(self):
        import grpc

        self.calls = {}
        self.lock = threading.Lock()

        def check(request, context):
            delay = dict(context.invocation_metadata()).get("x-auth-delay-ms", "0")
            time.sleep(min(int(delay or 0), 5000) / 1000)
            return request

        def say(request, context):
            metadata = dict(context.invocation_metadata())
            with self.lock:
                self.calls.setdefault(metadata.get("x-test-id", ""), []).append(
                    {"request": request, "x-decision": metadata.get("x-decision")})
            return b"echo:" + request

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("auth.Decider", {"Check": grpc.unary_unary_rpc_method_handler(check)}),
            grpc.method_handlers_generic_handler("test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}),
        ))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def seen(self, test_id):
        with self.lock:
            return list(self.calls.get(test_id, []))

    def close(self):
        self.server.stop(0)


def http_cluster(name, port):
    return {"name": name, "connect_timeout": "1s", "type": "STATIC",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


class EnforcementEnvoy:
    """Everything above plus one Envoy (V8 listener `v8_port`, thaw listener `thaw_port`). Use
    `start()` / `stop()` (from setUpClass / tearDownClass)."""

    def __init__(self, concurrency=2, log_level="warning"):
        self.concurrency = concurrency
        self.log_level = log_level

    def start(self):
        self.dir = h.workdir()
        artifacts = h.Artifacts(self.dir)
        decision = artifacts.signed("decision-filter")
        chaos = artifacts.signed("chaos-filter")
        self.upstream = RecordingUpstream()
        self.auth = AuthService()
        self.grpc = GrpcServices()
        thaw = h.thaw_filter({
            "trusted_keys": [str(artifacts.public_key)],
            "tenant_from": {"header": "x-tenant-id"},
            # A guest failure must show as what it is in every case, not as a quarantine that a
            # few earlier failures put the tenant in.
            "crash_loop": {"failures": 1000000},
            # V8 runs the guest without a CPU deadline; the decision tenants get one far above what
            # a guest call takes (about a millisecond), so a loaded CI machine that deschedules a
            # worker mid-call (the deadline counts epoch ticks, i.e. wall time) is not mistaken for
            # a parity difference (a 503 seen once with two builds running beside the suite).
            "tenants": {
                "per-request": {"module": str(decision), "isolation": "per_request", "call_deadline_ms": 1000},
                "pooled": {"module": str(decision), "isolation": "pooled", "call_deadline_ms": 1000},
                "chaos": {"module": str(chaos), "isolation": "per_request"},
            },
        })
        config, self.v8_port, self.thaw_port, admin = two_listener_config(
            self.upstream, v8_filter(h.GUESTS / "decision-filter.wasm"), thaw, self.grpc.port)
        config["static_resources"]["clusters"].append(http_cluster("auth", self.auth.port))
        for listener in config["static_resources"]["listeners"]:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["codec_type"] = "AUTO"  # HTTP/1.1 for the raw client, HTTP/2 for grpcio
            hcm["route_config"]["virtual_hosts"][0]["routes"] = [
                {"match": {"prefix": "/test.Echo/"}, "route": {"cluster": "grpc", "timeout": ROUTE_TIMEOUT}},
                {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": ROUTE_TIMEOUT}},
            ]
        self.envoy = h.Envoy(None, self.upstream, self.dir, config_text=json.dumps(config), port=self.v8_port,
                             admin_port=admin, concurrency=self.concurrency, log_level=self.log_level).__enter__()
        return self

    def stop(self):
        self.envoy.__exit__(None, None, None)
        self.upstream.close()
        self.auth.close()
        self.grpc.close()
        h.cleanup(self.dir)

    def hosts(self):
        """(name, port, tenant) of every host a case runs on; V8 first."""
        return [("v8", self.v8_port, None)] + [(f"thaw-{t}", self.thaw_port, t) for t in THAW_TENANTS]


def send_raw(port, method, path, headers, body_mode="none", pieces=(), delays=(), trailers=(), timeout=8.0):
    """One HTTP/1.1 request over a fresh connection (`connection: close`). `body_mode`: `none`,
    `length` (content-length, the pieces sent one by one) or `chunked` (one chunk per piece, then
    `trailers`). Before each piece the client waits its delay and stops sending if the response
    already came. Returns {status, headers (sorted pairs), body, complete, error}."""
    body = b"".join(pieces)
    head = [f"{method} {path} HTTP/1.1", "host: enforcement", "connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    if body_mode == "length":
        head.append(f"content-length: {len(body)}")
    elif body_mode == "chunked":
        head.append("transfer-encoding: chunked")
    data = b""
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            if body_mode != "none":
                for i, piece in enumerate(pieces):
                    delay = delays[i] if i < len(delays) else 0
                    if delay:
                        time.sleep(delay)
                    if select.select([sock], [], [], 0)[0]:
                        break  # the answer came before the whole request was sent
                    if body_mode == "chunked":
                        if piece:
                            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        sock.sendall(piece)
                else:
                    if body_mode == "chunked":
                        sock.sendall(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers) + b"\r\n")
        except OSError as e:
            error = f"send: {type(e).__name__}"
        while time.monotonic() < deadline:
            try:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
            except socket.timeout:
                error = "timeout"
                break
            except OSError as e:
                error = f"recv: {type(e).__name__}"
                break
            if not chunk:
                break
            data += chunk
            response = parse_response(data, None, eof=False)
            if response["complete"]:
                return response  # framing says done: no need to wait for Envoy's delayed close
    return parse_response(data, error, eof=True)


def parse_response(data, error, eof):
    """The response in `data`; `complete` when its framing is satisfied (or, unframed, at `eof`)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return {"status": None, "headers": [], "body": b"", "complete": False, "error": error or "no response"}
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    values = dict(headers)
    complete = True
    if "chunked" in values.get("transfer-encoding", ""):
        body, complete = b"", False
        while True:
            line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(line.split(b";")[0] or b"0", 16)
            if size == 0:
                complete = True
                break
            if len(rest) < size + 2:
                body += rest[:size]
                break
            body, rest = body + rest[:size], rest[size + 2:]
    elif "content-length" in values:
        body = rest[:int(values["content-length"])]
        complete = len(body) == int(values["content-length"])
    else:
        body, complete = rest, eof
    return {"status": status, "headers": sorted(headers), "body": body, "complete": complete, "error": None if complete else error}


def client_view(response):
    """What the client saw, minus headers that differ whatever the filter does."""
    return {
        "status": response["status"],
        "headers": [(k, v) for k, v in response["headers"] if k not in VOLATILE_RESPONSE_HEADERS],
        "body": response["body"].decode(errors="replace"),
        "complete": response["complete"],
    }


def upstream_view(records):
    """What the upstream saw of one request (a list: a request reaching it twice would show)."""
    return [{
        "complete": r["complete"],
        "method": r["method"],
        "body": r["body"].decode(errors="replace"),
        "trailers": sorted(r["trailers"].items()),
        "decision_headers": h.without_empty_values(sorted((k, v) for k, v in r["headers"] if k.startswith("x-decision"))),
    } for r in records]


# Phases in which the guest still holds the request headers when it denies: nothing of a denied
# request may reach the upstream then, not even its headers.
HEADER_HOLDING_PHASES = {"request-headers", "call-response", "grpc-response"}
BODY_PHASES = {"request-body", "request-trailers"}
RESPONSE_PHASES = {"response-headers", "response-body"}
UPSTREAM_REPLY_MARK = "upstream reply line"


class Case:
    """One request of the enforcement suites, sent identically to every host."""

    def __init__(self, phase, verdict, call="none", delay_ms=0, method="POST", body_mode="none", pieces=(),
                 delays=(), trailers=(), extra_headers=(), upstream_chunked=False, deny_status=None,
                 deny_grpc_status=None):
        self.phase, self.verdict, self.call, self.delay_ms = phase, verdict, call, delay_ms
        self.method, self.body_mode, self.pieces, self.delays = method, body_mode, list(pieces), list(delays)
        self.trailers, self.extra_headers = list(trailers), list(extra_headers)
        self.upstream_chunked, self.deny_status, self.deny_grpc_status = upstream_chunked, deny_status, deny_grpc_status

    def fields(self):
        return dict(vars(self))

    def copy(self, **changes):
        fields = self.fields()
        fields.update(changes)
        return Case(**fields)

    def __repr__(self):
        shown = {k: v for k, v in self.fields().items() if v not in ((), [], None, False)}
        shown["pieces"] = [len(p) for p in self.pieces]
        return f"Case({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def body(self):
        return b"".join(self.pieces) if self.body_mode != "none" else b""

    def headers(self):
        headers = [("x-decide-phase", self.phase), ("x-decide", self.verdict), ("x-decide-call", self.call),
                   ("x-auth-delay-ms", str(self.delay_ms))]
        if self.deny_status is not None:
            headers.append(("x-decide-status", str(self.deny_status)))
        if self.deny_grpc_status is not None:
            headers.append(("x-decide-grpc-status", str(self.deny_grpc_status)))
        if self.upstream_chunked:
            headers.append(("x-upstream-chunked", "1"))
        return headers + self.extra_headers

    def deciding_phase(self):
        """Where the guest decides: `x-decide-phase`, except that without one a real callout's
        answer decides (as at `call-response`)."""
        if self.phase not in HEADER_HOLDING_PHASES | BODY_PHASES | RESPONSE_PHASES:
            return "call-response" if self.call in ("http", "grpc") else "none"
        return self.phase

    def decision_is_taken(self):
        """False where the deciding callback never runs (a body phase without body or trailers)."""
        phase = self.deciding_phase()
        if phase in BODY_PHASES:
            return bool(self.body()) or bool(self.trailers and self.body_mode == "chunked")
        return phase in HEADER_HOLDING_PHASES | RESPONSE_PHASES

    def denies(self):
        return self.verdict == "deny" and self.decision_is_taken()

    def holds_request_headers(self):
        """The guest holds the request headers until it decides (in a body phase it resumes them
        when its callout answers, or never pauses them)."""
        return self.deciding_phase() in HEADER_HOLDING_PHASES

    def body_lost_in_a_v8_race(self):
        """Envoy's Wasm filter (V8) drops the buffered request body when the guest resumes from
        its callout after the request's trailers arrived and then pauses in the body (the upstream
        gets the trailers and 0 body bytes); before the trailers it does not. Where the answer and
        the trailers race, V8's own outcome is random: such cases are not generated."""
        return self.call in ("http", "grpc") and self.phase in BODY_PHASES and self.body_mode == "chunked" and bool(self.trailers)


def send_case(port, case, test_id, tenant=None):
    headers = case.headers() + [("x-test-id", test_id)] + ([("x-tenant-id", tenant)] if tenant else [])
    return send_raw(port, case.method, "/enforce", headers, case.body_mode, case.pieces, case.delays,
                    case.trailers if case.body_mode == "chunked" else ())


def upstream_observation(case, records):
    """What the upstream saw of one request, for comparing hosts: the requests that arrived whole,
    and, where the guest held the request headers, whether anything arrived at all. (Elsewhere the
    guest let the headers go: whether the upstream saw them before a later denial reset the
    request is a race in either host.)"""
    view = {"whole_requests": [r for r in upstream_view(records) if r["complete"]]}
    if case.holds_request_headers():
        view["anything_arrived"] = bool(records)
    return view


def invariant_violations(case, client, records):
    """What breaks enforcement in one host's observation of `case` (empty: nothing)."""
    whole = [r for r in records if r["complete"]]
    problems = []
    if case.denies() and case.deciding_phase() not in RESPONSE_PHASES:
        if whole:
            problems.append(f"the denied request reached the upstream whole (body {len(whole[0]['body'])} bytes)")
        elif records and case.holds_request_headers():
            problems.append("the denied request's headers reached the upstream")
        if client["status"] == 200 or UPSTREAM_REPLY_MARK in client["body"]:
            problems.append(f"the client got the upstream's answer ({client['status']})")
    elif case.denies():
        if UPSTREAM_REPLY_MARK in client["body"]:
            problems.append(f"the client got the denied upstream response ({client['status']})")
    else:
        # What exactly arrives (body bytes, trailers, headers) is compared with V8, not asserted:
        # see Case.body_lost_in_a_v8_race.
        if len(whole) != 1:
            problems.append(f"the allowed request reached the upstream whole {len(whole)} times")
        if client["status"] != 200 or UPSTREAM_REPLY_MARK not in client["body"]:
            problems.append(f"the client did not get the upstream's answer: {client['status']} {client['body'][:80]!r}")
    return problems
