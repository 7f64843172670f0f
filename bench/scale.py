"""thaw at platform scale, on the real Envoy 1.40.0 with file-based dynamic listeners (LDS from a file).

Scenarios (`--scenarios`, default all):
  scale   10,000 tenants, each with its own artifact (distinct native code: the C auth guest plus one
          function returning the tenant's number) and its own plugin configuration: start to ready,
          RSS idle and per tenant, the latency of the first request to never-served tenants against
          warm ones; then 100,000 tenants sharing 10 artifacts, inline in the listener (`tenants`)
          and as one file per tenant (`tenants_dir`).
  reload  the 10,000-tenant listener rewritten with one tenant's artifact changed: thaw's own load
          time (its log line), the time until Envoy applied the update, RSS before and after, and
          the changed tenant served by its new artifact.
  flood   a warm tenant measured at a steady rate while a flood hits (a) four warm tenants, (b) a
          never-served tenant with every request (tens of thousands), (c) the same with a
          cold-start limit; per_request and pooled isolation.

Writes its section of RELIABILITY.md (between the `scale` markers). Envoy runs one worker pinned to
CPU 0; the load generators (wrk, Debian) run on CPU 1. Everything listens on 127.0.0.1 only.
Usage: python bench/scale.py [--tenants 10000] [--shared-tenants 100000] [--scenarios scale,reload,flood] [--quick]
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

h = b.h
WORK = b.WORK / "scale"
GUEST = "c-auth-abi010"
GOOD = {"authorization": "Bearer c-good"}
MARK_BEGIN, MARK_END = "<!-- scale:begin -->", "<!-- scale:end -->"


def log(msg):
    b.log(msg)


# ---------------------------------------------------------------- distinct artifacts

class Artifacts:
    """Signed, distinct .cwasm files t<i>.cwasm made from the C auth guest, kept across runs."""

    def __init__(self):
        self.dir = WORK / "artifacts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wasm = (h.GUESTS / f"{GUEST}.wasm").read_bytes()
        keys = b.WORK / "keys"
        if not (keys / "bench.key.pem").exists():
            h.thaw("keygen", "--out-dir", keys, "--name", "bench")
        self.private, self.public = keys / "bench.key.pem", keys / "bench.pub.pem"
        self.version = h.thaw("--version").stdout.strip()

    def one(self, name, n):
        cwasm = self.dir / f"{name}.cwasm"
        stamp = self.dir / f"{name}.made"
        if stamp.exists() and stamp.read_text() == self.version:
            return cwasm
        wasm = self.dir / f"{name}.wasm"
        wasm.write_bytes(h.with_distinct_code(self.wasm, n))
        subprocess.run([h.THAW, "compile", wasm, "-o", cwasm], check=True, capture_output=True)
        subprocess.run([h.THAW, "sign", "--key", self.private, cwasm, "-o", f"{cwasm}.sig"], check=True, capture_output=True)
        wasm.unlink()
        stamp.write_text(self.version)
        return cwasm

    def ensure(self, names):
        """{name: .cwasm} for (name, number) pairs, made two at a time (the machine has two cores)."""
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            paths = dict(zip([n for n, _ in names], pool.map(lambda p: self.one(*p), names)))
        log(f"artifacts: {len(names)} ready in {time.monotonic() - started:.0f} s")
        return paths


# ---------------------------------------------------------------- Envoy with a listener file

def thaw_filter(tenants, public, tenants_dir=None, revision=0, **extra):
    cfg = {"trusted_keys": [str(public)], "tenant_from": {"header": "x-tenant-id"}, "unknown_tenant": "deny",
           "max_live_instances": 4000, "revision": revision, **extra}
    if tenants:
        cfg["tenants"] = tenants
    if tenants_dir:
        cfg["tenants_dir"] = str(tenants_dir)
    return {"name": "thaw", "typed_config": {
        "@type": b.DYNAMIC, "dynamic_module_config": {"name": "thaw", "do_not_close": True, "metrics_namespace": "thaw"},
        "filter_name": "thaw", "filter_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": cfg}}}


def tenant(path, i, isolation="per_request"):
    return {"module": str(path), "isolation": isolation, "call_deadline_ms": 1000, "plugin_config": {"tenant": f"t{i}", "n": i}}


class ListenerEnvoy:
    """Envoy whose one listener comes from a file (`write` replaces it atomically; Envoy reloads)."""

    def __init__(self, name, filters, drain_s=None):
        self.dir = WORK / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin, self.port = b.free_ports(2)
        self.lds = self.dir / "lds.json"
        self.write(filters)
        bootstrap = {"node": {"id": "scale", "cluster": "scale"},
                     "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin}}},
                     "dynamic_resources": {"lds_config": {"path_config_source": {"path": str(self.lds)}, "resource_api_version": "V3"}},
                     "stats_flush_interval": "1s"}
        self.config = self.dir / "bootstrap.json"
        self.config.write_text(json.dumps(bootstrap))
        self.log_path = self.dir / "envoy.log"
        self.log = open(self.log_path, "w")
        env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(b.MODULES))
        started = time.monotonic()
        self.proc = subprocess.Popen(["taskset", "-c", "0", h.ENVOY, "-c", str(self.config), "--concurrency", "1",
                                      "--disable-hot-restart", "--base-id", str(self.admin), "-l", "info"]
                                     + (["--drain-time-s", str(drain_s)] if drain_s is not None else []),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        while self.updates() < 1 or not self.listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() - started > 900:
                raise RuntimeError("envoy not ready in 900 s")
            time.sleep(0.01)
        self.ready_s = time.monotonic() - started

    def write(self, filters, revision=None):
        listener = b.listener("main", getattr(self, "port", 0), filters)
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        tmp = self.lds.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": [listener]}))
        os.rename(tmp, self.lds)

    def stat(self, name):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter=^{re.escape(name)}$", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0
        m = re.search(rf"^{re.escape(name)}: (\d+)", text, re.M)
        return int(m.group(1)) if m else 0

    def prometheus_sum(self, metric):
        """The sum over tenants of thaw's prometheus metric `metric` (0 when none was recorded)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats/prometheus", timeout=30) as r:
            text = r.read().decode()
        return sum(float(m) for m in re.findall(rf"^envoy_thaw_{metric}{{[^}}]*}} (\S+)$", text, re.M))

    def updates(self):
        return self.stat("listener_manager.lds.update_success")

    def listening(self):
        return self.stat("listener_manager.total_listeners_active") >= 1

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def load_times_ms(self):
        """thaw's own figures for each filter config it loaded: (tenants, reused files, ms)."""
        self.log.flush()
        pattern = r"(\d+) tenants loaded from .*?; (\d+) files as an earlier config verified them; (?:\d+ snapshots as resumed before; )?in (\d+) ms"
        return [tuple(map(int, m)) for m in re.findall(pattern, self.log_path.read_text())]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        alive = self.proc.returncode in (0, -15)
        assert alive, f"envoy ended with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"


def first_requests(env, tenants):
    """(latencies of a first request to each tenant, of a second one), every answer 200."""
    cold, warm = [], []
    for t in tenants:
        for into in (cold, warm):
            status, us = request_auth(env.port, t)
            assert status == 200, (t, status)
            into.append(us)
    return cold, warm


def request_auth(port, tenant):
    import http.client
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/", headers=dict(GOOD, **{"x-tenant-id": tenant}))
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status, (time.perf_counter() - started) * 1e6


# ---------------------------------------------------------------- scenarios

def scenario_scale(art, n, shared_n, quick):
    results = {}
    names = [(f"t{i}", i) for i in range(n)]
    paths = art.ensure(names)
    tenants = {name: tenant(paths[name], i) for name, i in names}
    env = ListenerEnvoy("distinct", [thaw_filter(tenants, art.public)])
    idle = env.rss_mib()
    sample = [f"t{i}" for i in range(0, n, max(1, n // 200))]
    cold, warm = first_requests(env, sample)
    served = env.rss_mib()
    loads = env.load_times_ms()
    env.stop()
    results["distinct"] = {"n": n, "ready_ms": env.ready_s * 1000, "thaw_ms": loads[-1][2] if loads else None,
                           "idle_mib": idle, "served_mib": served, "cold": cold, "warm": warm}
    log(f"scale: {n} distinct tenants ready in {env.ready_s:.1f} s (thaw {loads}), RSS {idle:.0f} MiB")

    base = ListenerEnvoy("none", [])
    none_rss, none_ready = base.rss_mib(), base.ready_s
    base.stop()
    results["none"] = {"ready_ms": none_ready * 1000, "idle_mib": none_rss}

    few = [paths[f"t{i}"] for i in range(10)]
    shared = {f"s{i}": tenant(few[i % 10], i) for i in range(shared_n)}
    env = ListenerEnvoy("shared-inline", [thaw_filter(shared, art.public)])
    inline = {"ready_ms": env.ready_s * 1000, "idle_mib": env.rss_mib(), "thaw_ms": env.load_times_ms()[-1][2]}
    status, _ = request_auth(env.port, f"s{shared_n - 1}")
    assert status == 200, status
    env.stop()
    log(f"scale: {shared_n} shared tenants inline ready in {inline['ready_ms']:.0f} ms, RSS {inline['idle_mib']:.0f} MiB")

    tdir = WORK / "tenants-dir"
    tdir.mkdir(parents=True, exist_ok=True)
    for name, t in shared.items():
        f = tdir / f"{name}.json"
        text = json.dumps(t)
        if not f.exists() or f.read_text() != text:
            f.write_text(text)
    env = ListenerEnvoy("shared-dir", [thaw_filter({}, art.public, tenants_dir=tdir)])
    from_dir = {"ready_ms": env.ready_s * 1000, "idle_mib": env.rss_mib(), "thaw_ms": env.load_times_ms()[-1][2]}
    status, _ = request_auth(env.port, f"s{shared_n - 1}")
    assert status == 200, status
    env.stop()
    log(f"scale: {shared_n} shared tenants from tenants_dir ready in {from_dir['ready_ms']:.0f} ms, RSS {from_dir['idle_mib']:.0f} MiB")
    results["shared"] = {"n": shared_n, "inline": inline, "dir": from_dir}
    return results


DRAIN_S = 5


def scenario_reload(art, n, rounds):
    """The n-tenant listener rewritten `rounds` times with tenant t0 on a new artifact: tenants inline
    in the listener, then from `tenants_dir` (t0's file rewritten, `revision` changed). Envoy drains
    an updated listener's old filter chains for --drain-time-s (default 600 s), and they hold the
    old filter config until then; here it is DRAIN_S, and RSS is read again once they drained."""
    names = [(f"t{i}", i) for i in range(n)]
    paths = art.ensure(names + [(f"t0-v{r + 2}", n + r) for r in range(rounds)])
    results = {}
    for shape in ("inline", "tenants_dir"):
        tenants = {name: tenant(paths[name], i) for name, i in names}
        tdir = WORK / "reload-tenants"
        if shape == "tenants_dir":
            tdir.mkdir(parents=True, exist_ok=True)
            for name, t in tenants.items():
                f, text = tdir / f"{name}.json", json.dumps(t)
                if not f.exists() or f.read_text() != text:
                    f.write_text(text)
            time.sleep(0.2)

        def listener(revision):
            return [thaw_filter(tenants, art.public, revision=revision) if shape == "inline"
                    else thaw_filter({}, art.public, tenants_dir=tdir, revision=revision)]

        env = ListenerEnvoy(f"reload-{shape}", listener(0), drain_s=DRAIN_S)
        status, _ = request_auth(env.port, "t1")
        assert status == 200, status
        rows = []
        for r in range(rounds):
            rss_before = env.rss_mib()
            tenants["t0"] = tenant(paths[f"t0-v{r + 2}"], 0)
            if shape == "tenants_dir":
                tmp = tdir / ".t0.json.tmp"
                tmp.write_text(json.dumps(tenants["t0"]))
                os.rename(tmp, tdir / "t0.json")
            before = env.updates()
            started = time.monotonic()
            env.write(listener(r + 1))
            while env.updates() <= before:
                assert env.proc.poll() is None, env.log_path.read_text()[-3000:]
                assert time.monotonic() - started < 600, "reload not applied in 600 s"
                time.sleep(0.005)
            applied_ms = (time.monotonic() - started) * 1000
            # The changed tenant and an unchanged one both serve from the new config.
            for t in ("t0", "t1"):
                status, _ = request_auth(env.port, t)
                assert status == 200, (t, status)
            time.sleep(1)
            loads = env.load_times_ms()
            rows.append({"applied_ms": applied_ms, "thaw": loads[-1], "rss_before": rss_before, "rss_after": env.rss_mib()})
            log(f"reload {shape} {r}: applied in {applied_ms:.0f} ms, thaw {loads[-1]}, RSS {rss_before:.0f} -> {env.rss_mib():.0f} MiB")
        time.sleep(DRAIN_S + 5)
        drained = env.rss_mib()
        first = env.load_times_ms()[0]
        env.stop()
        results[shape] = {"first": first, "ready_ms": env.ready_s * 1000, "rounds": rows, "drained_mib": drained}
        log(f"reload {shape}: RSS {drained:.0f} MiB once the old configs drained")
    return {"n": n, "shapes": results}


FLOOD_LUA = """
-- The flood: each request to a tenant of its own (cold) or to one of a few warm ones.
local cold = os.getenv("THAW_FLOOD") == "cold"
local think = tonumber(os.getenv("THAW_FLOOD_THINK_MS") or "1")
local first = tonumber(os.getenv("THAW_FLOOD_FIRST") or "0")
local count = tonumber(os.getenv("THAW_FLOOD_COUNT") or "1")
local n = 0
request = function()
  n = n + 1
  local t
  if cold then t = "c" .. (first + (n % count)) else t = "w" .. (1 + n % 4) end
  return wrk.format("GET", "/", {["x-tenant-id"] = t, ["authorization"] = "Bearer c-good"})
end
function delay() return think end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

MEASURE_LUA = """
-- The measured warm tenant, at a steady rate.
wrk.headers["x-tenant-id"] = "w0"
wrk.headers["authorization"] = "Bearer c-good"
function delay() return 2 end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50":%d,"p99":%d,"p999":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
  -- Every latency seen, as value:count pairs, so that runs can be merged into one distribution.
  local pairs = {}
  local i = 1
  while true do
    local value, count = latency(i)
    if value == 0 then break end  -- past the last value (wrk leaves count as it was)
    pairs[#pairs + 1] = string.format("%d:%d", value, count)
    i = i + 1
  end
  io.write("WRK_HIST " .. table.concat(pairs, ",") .. "\\n")
end
"""


def wrk_run(port, script, seconds, connections, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wrk_result(p, seconds):
    out, err = p.communicate(timeout=seconds + 120)
    line = next((l for l in out.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out}{err}")
    r = json.loads(line[len("WRK_JSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    hist = next((l for l in out.splitlines() if l.startswith("WRK_HIST ")), None)
    if hist is not None:
        r["hist"] = {int(v): int(c) for v, c in (p.split(":") for p in hist[len("WRK_HIST "):].split(",") if p)}
    return r


def merged_percentile(runs, q):
    """The `q` percentile (0-100) of the latencies of all `runs` together (wrk's raw histograms)."""
    merged = {}
    for run in runs:
        for value, count in run["hist"].items():
            merged[value] = merged.get(value, 0) + count
    total, seen = sum(merged.values()), 0
    for value in sorted(merged):
        seen += merged[value]
        if seen >= total * q / 100:
            return value
    return 0


FLOOD_LIMIT = {"per_second": 100, "burst": 5}  # the defaults of `cold_starts: {}`


def scenario_flood(art, artifacts_n, seconds, rounds):
    """Per isolation mode: without a cold-start limit, a warm flood and a cold flood (alternating,
    `rounds` each); then, in an Envoy with `cold_starts: FLOOD_LIMIT`, the same (the cold flood's
    shed requests are 503s). Each cold flood's ratio is against the warm flood just before it in the
    same Envoy: this VM's latency drifts by half over minutes, so baselines are paired. The report
    also merges every round's latencies of a kind (`merged_percentile`): the target is judged on
    those, as one round's p99 moves 2-3x from round to round here.
    A cold flood's every request names a tenant no request named before in that Envoy: enough
    tenants for 2,000 requests a second (their artifacts, `artifacts_n` distinct, round-robin)."""
    flood_lua, measure_lua = WORK / "flood.lua", WORK / "measure.lua"
    flood_lua.write_text(FLOOD_LUA)
    measure_lua.write_text(MEASURE_LUA)
    names = [(f"t{i}", i) for i in range(artifacts_n)]
    paths = art.ensure(names)
    per_round = 2000 * seconds
    results = {}
    for isolation in ("per_request", "pooled"):
        tenants = {f"w{i}": tenant(paths[f"t{i}"], i, isolation) for i in range(5)}
        tenants.update({f"c{i}": tenant(paths[f"t{i % artifacts_n}"], i, isolation) for i in range(per_round * rounds)})
        for limited in (False, True):
            extra = {"cold_starts": FLOOD_LIMIT} if limited else {}
            env = ListenerEnvoy(f"flood-{isolation}-{'limited' if limited else 'open'}", [thaw_filter(tenants, art.public, **extra)])
            for i in range(5):
                status, _ = request_auth(env.port, f"w{i}")
                assert status == 200, status
            for r in range(rounds):
                for kind in ("warm", "cold"):
                    flood = wrk_run(env.port, flood_lua, seconds, 8, {"THAW_FLOOD": kind, "THAW_FLOOD_THINK_MS": "4",
                                                                      "THAW_FLOOD_FIRST": str(r * per_round), "THAW_FLOOD_COUNT": str(per_round)})
                    measured = wrk_run(env.port, measure_lua, seconds, 1, {})
                    m, f = wrk_result(measured, seconds), wrk_result(flood, seconds)
                    assert m["errors"] == 0 and m["non_2xx"] == 0, m
                    assert (limited and kind == "cold") or f["non_2xx"] == 0, f
                    assert f["requests"] <= per_round, f"the flood outran its {per_round} cold tenants: {f}"
                    key = (isolation, f"{kind}, limited" if limited else kind)
                    results.setdefault(key, []).append({"measured": m, "flood": f})
                    log(f"flood {isolation} {key[1]} round {r}: warm p99 {m['p99']} us at {m['rps']:.0f} rps; "
                        f"flood {f['rps']:.0f} rps ({f['non_2xx']} shed) p99 {f['p99']} us")
            if limited:
                results[(isolation, "shed")] = env.prometheus_sum("wasm_cold_start_shed_total")
            env.stop()
    return results


# ---------------------------------------------------------------- report

def fmt_ms(v):
    return "-" if v is None else f"{v:.0f}"


def report(res, args, started, finished, m0):
    L = []
    w = L.append
    w(MARK_BEGIN)
    w("## Scale, reloads and cold-tenant floods\n")
    w(f"One run of `./bazel-free-build.sh scale` (`python bench/scale.py {' '.join(sys.argv[1:])}`), "
      f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, {(finished - started) / 60:.1f} minutes, on "
      f"{m0['cores']} cores ({m0['cpu']}), load average before {m0['load'][0]:.2f}. The real Envoy 1.40.0, one worker pinned to "
      "CPU 0, its listener from a file (LDS); wrk on CPU 1. Tenants run the C auth guest (`examples/c/c-auth-abi010.c`), each "
      "tenant's copy with one extra function returning the tenant's number, so every tenant's native code differs; each has "
      "its own plugin configuration (init runs once per tenant at load).\n")
    if "scale" in res:
        s = res["scale"]
        d, none = s["distinct"], s["none"]
        per_tenant_kib = (d["idle_mib"] - none["idle_mib"]) * 1024 / d["n"]
        w("### Tenants at platform scale\n")
        w("| configuration | start to ready ms | thaw's load ms | RSS idle MiB | RSS per tenant KiB |")
        w("|---|---|---|---|---|")
        w(f"| no filter (listener from file) | {none['ready_ms']:.0f} | - | {none['idle_mib']:.0f} | - |")
        w(f"| {d['n']:,} tenants, distinct artifacts and configs | {d['ready_ms']:.0f} | {fmt_ms(d['thaw_ms'])} | "
          f"{d['idle_mib']:.0f} | {per_tenant_kib:.0f} |")
        for label, key in (("inline `tenants`", "inline"), ("`tenants_dir` (one file per tenant)", "dir")):
            r = s["shared"][key]
            w(f"| {s['shared']['n']:,} tenants on 10 artifacts, {label} | {r['ready_ms']:.0f} | {fmt_ms(r['thaw_ms'])} | "
              f"{r['idle_mib']:.0f} | {(r['idle_mib'] - none['idle_mib']) * 1024 / s['shared']['n']:.1f} |")
        cold, warm = d["cold"], d["warm"]
        w(f"\nFirst request to {len(cold)} of the {d['n']:,} tenants, never served by the worker, then a second one (each "
          "on a new connection, from Python): ")
        w(f"cold p50 {b.pct(cold, .5):.0f} us, p99 {b.pct(cold, .99):.0f} us; warm p50 {b.pct(warm, .5):.0f} us, "
          f"p99 {b.pct(warm, .99):.0f} us. RSS after serving them: {d['served_mib']:.0f} MiB.\n")
    if "reload" in res:
        r = res["reload"]
        w(f"### A reload that changes one tenant of {r['n']:,}\n")
        w(f"The listener rewritten with tenant `t0` on a new artifact (the {r['n'] - 1:,} others unchanged), the tenants inline in "
          "the listener or in `tenants_dir` (t0's file replaced, `revision` changed). Envoy creates the filter config anew, and "
          "thaw reuses every module, link and init check an earlier live config made for files, evidence and trust that did not "
          f"change (`src/load_cache.rs`). Envoy runs with `--drain-time-s {DRAIN_S}`: an updated listener's old filter chains, "
          "and so the old filter config, live until drained (600 s by default).\n")
        w("| tenants | round | files reused | thaw's load ms | update applied ms (file renamed -> Envoy's update_success) | RSS before MiB | RSS after MiB |")
        w("|---|---|---|---|---|---|---|")
        for shape, x in r["shapes"].items():
            w(f"| {shape} | first load | 0 | {x['first'][2]} | {x['ready_ms']:.0f} (start to ready) | | |")
            for i, row in enumerate(x["rounds"]):
                w(f"| {shape} | {i + 1} | {row['thaw'][1]:,} of {row['thaw'][0]:,} | {row['thaw'][2]} | {row['applied_ms']:.0f} | "
                  f"{row['rss_before']:.0f} | {row['rss_after']:.0f} |")
            w(f"| {shape} | drained | | | | | {x['drained_mib']:.0f} |")
        w("")
    if "flood" in res:
        f = res["flood"]
        w("### Cold-tenant floods\n")
        w(f"The warm tenant `w0` is measured by one wrk connection (2 ms think time) while a flood of the same shape (8 "
          "connections, 4 ms think time) hits either four warm tenants or tenants never served before (a new one per "
          "request, thousands in all). Ratio: the warm tenant's p99 under the flood over its p99 under the warm flood of the "
          f"same round and Envoy, just before it; in the **all** rows, of every round's samples together (target <= 1.5). `limited`: an Envoy with `cold_starts: {json.dumps(FLOOD_LIMIT)}` "
          "(the cold flood's shed requests answered 503 with `retry-after`).\n")
        w("| isolation | flood | round | warm tenant p50 us | warm tenant p99 us | flood rps | flood shed | flood p99 us | ratio p99 vs warm flood |")
        w("|---|---|---|---|---|---|---|---|---|")
        for isolation in ("per_request", "pooled"):
            for kind in ("warm", "cold", "warm, limited", "cold, limited"):
                warm_runs = f[(isolation, "warm, limited" if "limited" in kind else "warm")]
                for i, run in enumerate(f[(isolation, kind)]):
                    base = warm_runs[i]["measured"]["p99"]
                    ratio = f"{run['measured']['p99'] / max(base, 1):.2f}"
                    w(f"| {isolation} | {kind} | {i + 1} | {run['measured']['p50']} | {run['measured']['p99']} | "
                      f"{run['flood']['rps']:.0f} | {run['flood']['non_2xx']} | {run['flood']['p99']} | {ratio} |")
                runs = [run["measured"] for run in f[(isolation, kind)]]
                p99 = merged_percentile(runs, 99)
                base = merged_percentile([run["measured"] for run in warm_runs], 99)
                w(f"| {isolation} | **{kind}** | **all {len(runs)}** | {merged_percentile(runs, 50)} | {p99} | | | | "
                  f"**{p99 / max(base, 1):.2f}** |")
            w(f"| {isolation} | | | | | | `wasm_cold_start_shed_total` {f[(isolation, 'shed')]:.0f} | | |")
        w("")
    w(MARK_END)
    return "\n".join(L)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=10000)
    parser.add_argument("--shared-tenants", type=int, default=100000)
    parser.add_argument("--scenarios", default="scale,reload,flood")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(b.ROOT / "RELIABILITY.md"))
    args = parser.parse_args()
    if args.quick:
        args.tenants, args.shared_tenants = min(args.tenants, 500), min(args.shared_tenants, 2000)
    scenarios = set(args.scenarios.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    b.MODULES.mkdir(parents=True, exist_ok=True)
    so = b.ROOT / "target" / "release" / "libthaw.so"
    target = b.MODULES / so.name
    if target.exists() or target.is_symlink():
        target.unlink()
    import shutil
    shutil.copyfile(so, target)
    started, m0 = time.time(), b.machine()
    art = Artifacts()
    res = {}
    if "scale" in scenarios:
        res["scale"] = scenario_scale(art, args.tenants, args.shared_tenants, args.quick)
    if "reload" in scenarios:
        res["reload"] = scenario_reload(art, args.tenants, 2 if args.quick else 3)
    if "flood" in scenarios:
        res["flood"] = scenario_flood(art, 600 if args.quick else 4000, 3 if args.quick else 5, 1 if args.quick else 6)
    section = report(res, args, started, time.time(), m0)
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Reliability\n"
    if MARK_BEGIN in text:
        text = text[:text.index(MARK_BEGIN)] + section + text[text.index(MARK_END) + len(MARK_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)
    log(f"wrote {out} ({(time.time() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
