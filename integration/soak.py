"""The soak with churn (issue 13, part 5; `./bazel-free-build.sh soak [--minutes N]`).

The real Envoy 1.40.0 with libthaw.so takes its two listeners from a file (LDS), which this driver
rewrites every few seconds while wrk loads the tenants that stay:

- listener `strict` (`on_artifact_failure: reject_config`) and listener `lenient` (`disable_tenant`),
  each with a leak-probe tenant under `per_request`, one under `pooled`, and an auth tenant; the
  lenient one also runs hostile chaos-filter tenants (loop: the CPU deadline; alloc: the memory cap;
  trap), all under wrk (integration/soak.lua checks every answer: statuses, leaks);
- every push changes the loaded tenants' plugin configs and sometimes their artifacts (a v2 with
  other bytes, same behaviour), and adds, removes or changes churn tenants (probe, auth, chaos),
  sometimes to a tampered (a byte flipped) or foreign-signed artifact: the strict listener's update
  must be rejected (Envoy keeps the one it had), the lenient one must disable that tenant (503);
- after each push the driver waits for Envoy's LDS counters to account for it and checks every
  changed churn tenant answers as the new (or, rejected, the old) config says.

Checks, all enforced (exit 1 on failure): no unexpected status and no leak in any wrk answer, enough
probe requests, pooled instances really reused, each push applied or rejected as expected and
verified, the hostile guests really failed (Envoy's thaw counters), the refusals counted, Envoy's
RSS drift after warm-up under the limit, Envoy alive with the same pid from start to end, no panic
logged. Prints a summary, writes a JSON report (--report).
"""

import argparse
import copy
import dataclasses
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import harness as h

WRK_LUA = Path(__file__).resolve().with_name("soak.lua")
GUEST_FILES = {"probe": "probe-filter", "auth": "auth-filter", "chaos": "chaos-filter"}
LISTENERS = ("strict", "lenient")
ON_ARTIFACT_FAILURE = {"strict": "reject_config", "lenient": "disable_tenant"}
# Churn tenants: added, removed, changed by the pushes; checked by the driver, not loaded by wrk.
CHURN_SLOTS = {"strict": ["a-c0", "a-c1", "a-c2", "a-c3"], "lenient": ["b-c0", "b-c1", "b-c2", "b-c3"]}
# What a push does besides changing the loaded tenants' plugin configs; pushes cycle through these
# (slots and choices random), so a short run covers every kind.
# The warm-up's first seconds, in which pushes come every --warmup-reload-every seconds.
BURST_S = 60.0
MUTATIONS = ("add", "change_artifact", "change_config", "remove", "stable_artifact", "tamper_strict", "add",
             "change_kind", "tamper_lenient", "remove")


# ---------------------------------------------------------------------------------------------
# Artifacts


def with_passive_segment(wasm, payload):
    """`wasm` with one more data segment, passive (never copied into memory, no code refers to it):
    the module behaves the same, but its compiled .cwasm (which keeps the module's data), digest
    and signature differ. (A custom section would not do: Wasmtime drops it.)"""
    out, at = bytearray(wasm[:8]), 8
    added = False
    while at < len(wasm):
        section = wasm[at]
        size, body = h.read_leb128(wasm, at + 1)
        payload_bytes = wasm[body:body + size]
        at = body + size
        if section in (11, 12):  # data, data count: one segment more
            count, rest = h.read_leb128(payload_bytes, 0)
            new = h.leb128(count + 1) + payload_bytes[rest:]
            if section == 11:
                new += h.leb128(1) + h.leb128(len(payload)) + payload  # flags 1: passive
                added = True
            payload_bytes = new
        out += bytes([section]) + h.leb128(len(payload_bytes)) + payload_bytes
    if not added:
        raise ValueError("the module has no data section")
    return bytes(out)


class Builds:
    """Every artifact the soak names, made with the real thaw CLI and signed with a real key:
    per guest a v1 (build/guests' .wasm), a v2 (the same plus a passive data segment: other bytes,
    same behaviour), a tampered copy of v1 (one byte flipped in the middle, v1's signature kept) and a
    foreign one (v1's bytes signed by a key the config does not trust)."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.artifacts = h.Artifacts(workdir)
        self.files = {}
        for guest, file in GUEST_FILES.items():
            v1 = self.artifacts.signed(file)
            wasm2 = self.dir / f"{file}-v2.wasm"
            wasm2.write_bytes(with_passive_segment((h.GUESTS / f"{file}.wasm").read_bytes(), b"thaw soak v2"))
            v2 = self.dir / f"{file}-v2.cwasm"
            h.thaw("compile", wasm2, "-o", v2)
            self.artifacts.sign(v2)
            if v2.read_bytes() == v1.read_bytes():
                raise RuntimeError(f"{guest}: the v2 artifact has the same bytes as v1")
            tampered = self.dir / f"{file}-tampered.cwasm"
            data = bytearray(v1.read_bytes())
            data[len(data) // 2] ^= 0xFF
            tampered.write_bytes(bytes(data))
            Path(f"{tampered}.sig").write_bytes(Path(f"{v1}.sig").read_bytes())
            foreign = self.dir / f"{file}-foreign.cwasm"
            foreign.write_bytes(v1.read_bytes())
            self.artifacts.sign(foreign, key=self.artifacts.other_private_key)
            self.files[guest] = {"v1": v1, "v2": v2, "tampered": tampered, "foreign": foreign}


# ---------------------------------------------------------------------------------------------
# The model of what the listener file says


@dataclasses.dataclass
class Tenant:
    guest: str  # probe | auth | chaos
    isolation: str = "per_request"
    variant: str = "v1"  # v1 | v2 | tampered | foreign
    rev: int = 0  # plugin config revision
    knobs: dict = dataclasses.field(default_factory=dict)

    @property
    def refused(self):
        return self.variant in ("tampered", "foreign")

    def entry(self, builds):
        module = builds.files[self.guest][self.variant]
        if self.guest == "auth":
            # The base token stays (wrk uses it); the rotating one changes with every revision.
            plugin = {"tokens": {"s3cret": "alice", f"rot-{self.rev}": "rotated"}}
        else:
            plugin = {"rev": self.rev}
        return {"module": str(module), "signature": f"{module}.sig", "isolation": self.isolation,
                "plugin_config": plugin, **self.knobs}


# Deadlines: thaw's "CPU deadline" is wall-clock time (epoch ticks), so on a shared, overloaded
# host a thread descheduled mid-call for longer than the deadline fails a guest that needed
# microseconds: a probe's request (503) at the default 10 ms, a chaos tenant's init at config load
# at 5 ms (the whole listener update rejected). Found by this soak (RELIABILITY.md, "Soak"). So
# every guest gets 1 s but the looping one, whose deadline is what it tests: 100 ms.
WELL_BEHAVED = {"call_deadline_ms": 1000}
# The memory bomb's cap is 2 MiB (its initial memory is 1.06 MiB): its first 1 MiB allocation hits
# the cap before it touches anything, so the slot it leaves behind holds what any instance's does.
# With a larger cap each slot a bomb ran in keeps up to 2 MiB resident (bug 1 in RELIABILITY.md),
# and as reloads rotate new modules through the slots, RSS creeps up for tens of minutes toward
# (slots touched) x 2 MiB: bounded, but too slowly for a drift measured after minutes.
HOSTILE = {"call_deadline_ms": 1000, "memory_limit_mb": 2}
LOOP = {"call_deadline_ms": 100, "memory_limit_mb": 2}


def stable_tenants():
    """The tenants wrk loads: in every config of the run, so none of their answers may change."""
    chaos = HOSTILE
    ok = WELL_BEHAVED
    return {
        "strict": {"a-pr": Tenant("probe", knobs=dict(ok)), "a-pool": Tenant("probe", "pooled", knobs=dict(ok)),
                   "a-auth": Tenant("auth", knobs=dict(ok))},
        "lenient": {"b-pr": Tenant("probe", knobs=dict(ok)), "b-pool": Tenant("probe", "pooled", knobs=dict(ok)),
                    "b-auth": Tenant("auth", "pooled", knobs=dict(ok)),
                    "b-loop": Tenant("chaos", "pooled", knobs=dict(LOOP)),
                    "b-bomb": Tenant("chaos", knobs=dict(chaos)),
                    "b-trap": Tenant("chaos", "pooled", knobs=dict(chaos))},
    }


STABLE = {name for tenants in stable_tenants().values() for name in tenants}


def filter_config(builds, listener, tenants):
    config = {
        "trusted_keys": [str(builds.artifacts.public_key)],
        "tenant_from": {"header": "x-tenant-id"},
        "unknown_tenant": "deny",
        "on_error": "deny",
        "on_artifact_failure": ON_ARTIFACT_FAILURE[listener],
        "tenants": {name: t.entry(builds) for name, t in sorted(tenants.items())},
    }
    if listener == "lenient":
        # The hostile tenants fail on every request: 3 failures within a second quarantine one for
        # 3 s, so both the guests' own failures and quarantine answer their requests (and the
        # looping one burns at most 3 x 100 ms of CPU every 3 s or so).
        config["crash_loop"] = {"failures": 3, "window_ms": 1000, "quarantine_ms": 3000}
    return config


def render(builds, state, ports, upstream_port):
    return [h.lds_listener([h.thaw_filter(filter_config(builds, name, state[name]))], ports[name], name=name,
                           upstream_port=upstream_port) for name in LISTENERS]


# ---------------------------------------------------------------------------------------------
# Talking to Envoy


def admin(envoy, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}{path}", timeout=10) as r:
        return r.read().decode()


def counters(envoy, prefix):
    """Envoy's counters and gauges whose names start with `prefix` (text /stats)."""
    out = {}
    for line in admin(envoy, f"/stats?filter=^{re.escape(prefix)}").splitlines():
        name, sep, value = line.partition(": ")
        if sep and re.fullmatch(r"-?\d+", value.strip()):
            out[name] = int(value)
    return out


def thaw_metrics(envoy):
    """thaw's prometheus samples: {(metric, {labels}) as (name, frozenset(label items)): value}, the
    largest where a sample is repeated (one per live config)."""
    out = {}
    for line in envoy.stats().splitlines():
        m = re.match(r'^(envoy_thaw_\w+)\{([^}]*)\} (\S+)$', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        key = (m.group(1), labels)
        out[key] = max(out.get(key, 0), float(m.group(3)))
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def request(port, tenant, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"x-tenant-id": tenant, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_time(pid):
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid reused
    by another process would have another."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


# ---------------------------------------------------------------------------------------------
# What the driver expects of a churn tenant


class Expect:
    """Checks one churn tenant against the tenant model (None: absent). `check` returns None when
    the tenant answers as expected, else what it saw."""

    def __init__(self, port, name, tenant, listener, previous=None):
        self.port, self.name, self.tenant, self.listener, self.previous = port, name, tenant, listener, previous

    def describe(self):
        t = self.tenant
        if t is None:
            return "absent (403 unknown tenant)"
        if t.refused and self.listener == "lenient":
            return f"disabled ({t.variant} artifact refused: 503)"
        return f"{t.guest} {t.isolation} {t.variant} rev {t.rev}"

    def check(self, n):
        t, port, name = self.tenant, self.port, self.name
        if t is None:
            status, body = request(port, name)
            return None if status == 403 and "unknown tenant" in body else f"{status} {body!r}"
        if t.refused:
            # Only the lenient listener ever serves a refused artifact: its tenant is disabled.
            status, body = request(port, name)
            return None if status == 503 and "artifact was refused" in body else f"{status} {body!r}"
        if t.guest == "probe":
            for i in range(2):
                secret = f"{name}/driver/{n}-{i}"
                status, body = request(port, name, {"x-secret": secret})
                if status != 200 or not body.startswith("previous="):
                    return f"{status} {body!r}"
                echoed = body[len("previous="):]
                if echoed and (t.isolation == "per_request" or not echoed.startswith(f"{name}/")):
                    return f"LEAK: {t.isolation} probe echoed {echoed!r}"
            return None
        if t.guest == "auth":
            status, body = request(port, name, {"authorization": f"Bearer rot-{t.rev}"})
            if status != 200:
                return f"current token rot-{t.rev}: {status} {body!r}"
            if self.previous is not None and self.previous.guest == "auth" and self.previous.rev != t.rev:
                status, body = request(port, name, {"authorization": f"Bearer rot-{self.previous.rev}"})
                if status != 403:
                    return f"retired token rot-{self.previous.rev}: {status} {body!r}"
            status, body = request(port, name, {"authorization": "Bearer nope"})
            return None if status == 403 else f"wrong token: {status} {body!r}"
        if t.guest == "chaos":
            status, body = request(port, name, {"x-chaos": "trap"})
            return None if status == 503 else f"x-chaos trap: {status} {body!r}"
        raise ValueError(t.guest)


# ---------------------------------------------------------------------------------------------
# The soak


class Soak:
    def __init__(self, args):
        self.args = args
        self.seconds = max(10.0, args.minutes * 60)
        self.rng = random.Random(args.seed)
        self.dir = Path(h.workdir())
        self.failures = []
        self.figures = {"seed": args.seed, "minutes": args.minutes, "reload_every_s": args.reload_every}
        self.rss = []  # (seconds since load start, KiB)
        self.heap = []  # (seconds since load start, allocated KiB, heap size KiB)
        self.pushes = {"applied": 0, "rejected": 0, "verified_checks": 0, "retried_checks": 0}
        self.mutations = {m: 0 for m in sorted(set(MUTATIONS))}
        self.refusals_expected = {}  # tenant -> refusals this driver caused

    def fail(self, what):
        print(f"FAIL: {what}", flush=True)
        self.failures.append(what)

    def run(self):
        started = time.monotonic()
        print(f"soak: {self.seconds:.0f} s, reload every {self.args.reload_every} s, seed {self.args.seed}, "
              f"workdir {self.dir}", flush=True)
        self.builds = Builds(self.dir)
        self.upstream = h.Upstream(record=False)
        self.ports = {name: h.free_port() for name in LISTENERS}
        admin_port = h.free_port()
        self.lds = self.dir / "lds.json"
        self.state = stable_tenants()
        h.write_lds(self.lds, render(self.builds, self.state, self.ports, self.upstream.port))
        bootstrap = h.lds_bootstrap(self.lds, self.upstream.port, admin_port)
        envoy = h.Envoy([], self.upstream, self.dir, config_text=json.dumps(bootstrap), port=self.ports["strict"],
                        admin_port=admin_port, concurrency=self.args.concurrency, log_level="warning",
                        # A replaced listener asks every connection to close at its next answer
                        # (immediate), so none is still busy when its drain time ends and Envoy
                        # closes what is left.
                        extra_args=["--drain-time-s", str(self.args.drain_time), "--drain-strategy", "immediate"])
        try:
            with envoy:
                self.envoy = envoy
                self.soak(envoy)
        finally:
            self.upstream.close()
        self.figures["wall_s"] = round(time.monotonic() - started, 1)
        return self.report()

    def soak(self, envoy):
        pid = envoy.process.pid
        born = start_time(pid)
        self.figures["envoy_pid"] = pid
        lds0 = counters(envoy, "listener_manager.lds.")
        self.check_stable_once()
        stop = threading.Event()
        sampler = threading.Thread(target=self.sample_rss, args=(pid, stop), daemon=True)
        t0 = time.monotonic()
        self.t0 = t0
        sampler.start()
        wrks = self.start_wrk()
        try:
            self.churn(envoy, t0 + self.seconds)
        finally:
            outputs = [self.finish_wrk(w) for w in wrks]
            stop.set()
            sampler.join(timeout=5)
        self.figures["load_s"] = round(time.monotonic() - t0, 1)
        self.collect_wrk(outputs)
        # Envoy never crashed: the same process (pid and start time), alive.
        try:
            alive = envoy.process.poll() is None and start_time(pid) == born
        except OSError:
            alive = False
        if not alive:
            self.figures["envoy"] = {"alive": False}
            self.fail(f"Envoy (pid {pid}) is not the process that started: exited {envoy.process.poll()}")
            return
        # Envoy's own account of the reloads, against what the driver saw.
        lds1 = counters(envoy, "listener_manager.lds.")
        applied = lds1.get("listener_manager.lds.update_success", 0) - lds0.get("listener_manager.lds.update_success", 0)
        rejected = lds1.get("listener_manager.lds.update_rejected", 0) - lds0.get("listener_manager.lds.update_rejected", 0)
        self.figures["lds"] = {"update_success": applied, "update_rejected": rejected,
                               "pushes_applied": self.pushes["applied"], "pushes_rejected": self.pushes["rejected"]}
        if applied != self.pushes["applied"] or rejected != self.pushes["rejected"]:
            self.fail(f"Envoy counted {applied} applied / {rejected} rejected LDS updates; the driver pushed "
                      f"{self.pushes['applied']} to apply / {self.pushes['rejected']} to reject")
        lm = counters(envoy, "listener_manager.")
        self.figures["listener_manager"] = {k.split(".", 1)[1]: v for k, v in lm.items()
                                            if k.split(".", 1)[1] in ("listener_modified", "listener_in_place_updated",
                                                                      "listener_added", "listener_removed",
                                                                      "total_listeners_draining", "total_listeners_active")}
        self.check_hostile_and_refusals(envoy)
        self.check_rss()
        # ... live, and up since before the load.
        server = counters(envoy, "server.")
        uptime, state = server.get("server.uptime", 0), server.get("server.state", -1)
        self.figures["envoy"] = {"alive": True, "same_pid": True, "uptime_s": uptime, "state": state}
        if state != 0 or uptime < self.figures["load_s"] - 5:
            self.fail(f"Envoy server.state {state} (0 is LIVE), uptime {uptime} s over a {self.figures['load_s']} s load")
        # thaw's hook guards log "thaw: panic in <hook>"; a Rust panic message outside a guest's own
        # stderr (chaos-filter's trap mode panics inside the guest, logged as `wasm [tenant] stderr`).
        log = envoy.output()
        panics = [l for l in log.splitlines() if "thaw: panic in" in l or ("panicked at" in l and "] stderr: " not in l)]
        self.figures["panics_logged"] = len(panics)
        if panics:
            self.fail(f"{len(panics)} panics logged, first: {panics[0][:300]}")

    # --- load

    def wrk_jobs(self):
        """The wrk processes: (name, port, threads, delay ms, specs)."""
        d = self.args.delay_ms
        return [
            ("strict", self.ports["strict"], 3, d,
             ["pr:a-pr", "pool:a-pool", "pr:a-pr", "pool:a-pool", "pr:a-pr", "pool:a-pool", "auth:a-auth:s3cret:alice"]),
            ("lenient", self.ports["lenient"], 3, d,
             ["pool:b-pool", "pr:b-pr", "pool:b-pool", "pr:b-pr", "pool:b-pool", "pr:b-pr", "auth:b-auth:s3cret:alice"]),
            ("hostile", self.ports["lenient"], 1, self.args.hostile_delay_ms,
             ["fail:b-loop:loop", "fail:b-bomb:alloc", "fail:b-trap:trap"]),
        ]

    def start_wrk(self):
        procs = []
        for name, port, threads, delay, specs in self.wrk_jobs():
            cmd = ["wrk", f"-t{threads}", f"-c{threads}", f"-d{int(self.seconds)}s", "--timeout", "5s", "-s", str(WRK_LUA),
                   f"http://127.0.0.1:{port}/", "--", str(delay), *specs]
            out = open(self.dir / f"wrk-{name}.out", "w+")
            procs.append((name, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT), out))
        return procs

    def finish_wrk(self, job):
        name, proc, out = job
        try:
            proc.wait(timeout=max(0, self.t0 + self.seconds + 60 - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.fail(f"wrk {name} overran its duration and was killed")
        out.seek(0)
        text = out.read()
        out.close()
        if proc.returncode != 0:
            self.fail(f"wrk {name} exited {proc.returncode}: {text[-2000:]}")
        return name, text

    def collect_wrk(self, outputs):
        tenants = {}
        wrk = {}
        examples = []
        kinds = {spec.split(":")[1]: spec.split(":")[0] for job in self.wrk_jobs() for spec in job[4]}

        def tenant(name):
            return tenants.setdefault(name, {"kind": kinds.get(name, "?"), "requests": 0, "statuses": {}, "violations": {},
                                             "reused": 0})

        for name, text in outputs:
            summary = None
            for line in text.splitlines():
                parts = line.split(" ")
                if parts[0] == "SOAK" and len(parts) == 5 and parts[1] != "violation":
                    t = tenant(parts[1])
                    t["requests"] += int(parts[4])
                    t["statuses"][parts[3]] = t["statuses"].get(parts[3], 0) + int(parts[4])
                elif parts[0] == "SOAK" and parts[1] == "violation":
                    t = tenant(parts[2])
                    t["violations"][parts[3]] = t["violations"].get(parts[3], 0) + int(parts[4])
                elif parts[0] == "SOAK" and parts[1] == "reused":
                    tenant(parts[2])["reused"] += int(parts[3])
                elif parts[0] == "SOAK_EXAMPLE":
                    examples.append(line[len("SOAK_EXAMPLE "):])
                elif parts[0] == "SOAK_SUMMARY":
                    summary = dict(kv.split("=") for kv in parts[1:])
                    summary = {k: int(v) for k, v in summary.items()}
            if summary is None:
                self.fail(f"wrk {name} printed no summary: {text[-2000:]}")
                continue
            wrk[name] = summary
            socket_errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
            if socket_errors > self.args.max_socket_errors:
                self.fail(f"wrk {name}: {socket_errors} socket errors ({summary})")
        self.figures["wrk"] = wrk
        self.figures["tenants"] = tenants
        self.figures["violation_examples"] = examples[:20]
        probe = sum(t["requests"] for t in tenants.values() if t["kind"] in ("pr", "pool"))
        self.figures["probe_requests"] = probe
        self.figures["requests"] = sum(t["requests"] for t in tenants.values())
        leaks = sum(t["violations"].get("leak", 0) for t in tenants.values())
        self.figures["leaks"] = leaks
        for name, t in sorted(tenants.items()):
            if t["violations"]:
                self.fail(f"tenant {name}: violations {t['violations']}")
        for _, _, _, _, specs in self.wrk_jobs():
            for spec in specs:
                kind, tenant = spec.split(":")[:2]
                if tenants.get(tenant, {}).get("requests", 0) == 0:
                    self.fail(f"tenant {tenant} got no answers from wrk")
                if kind == "pool":
                    t = tenants.get(tenant, {"requests": 0, "reused": 0})
                    # Teeth: the pooled probe's instances really were reused (so a leak could show).
                    if t["reused"] < 0.25 * t["requests"]:
                        self.fail(f"pooled tenant {tenant}: only {t['reused']} of {t['requests']} answers from a reused instance")
        wanted = int(self.args.min_probe_rps * self.figures["load_s"])
        if probe < wanted:
            self.fail(f"{probe} probe requests, fewer than {wanted} ({self.args.min_probe_rps}/s over {self.figures['load_s']} s)")

    # --- RSS

    def sample_rss(self, pid, stop):
        """VmRSS every second; every 5 s also what Envoy's allocator says it holds (admin /memory),
        to tell a heap that grows from pages the kernel still counts."""
        n = 0
        while not stop.is_set() and n < self.seconds + 600:
            try:
                t = time.monotonic() - self.t0
                self.rss.append((t, rss_kib(pid)))
                if n % 5 == 0:
                    m = json.loads(admin(self.envoy, "/memory"))
                    self.heap.append((t, int(m.get("allocated", 0)) // 1024, int(m.get("heap_size", 0)) // 1024))
            except (OSError, RuntimeError, ValueError):
                pass
            n += 1
            stop.wait(1.0)

    def check_rss(self):
        """After the warm-up (`warmup_s`), the baseline is the median RSS of the window after it,
        the end the median of the last window (20 s to 1 min): a sustained change, not one memory
        bomb's moment."""
        load = self.figures["load_s"]
        warmup = self.warmup_s()
        window = max(20.0, min(60.0, load / 10))
        base = [kib for t, kib in self.rss if warmup <= t < warmup + window]
        end = [kib for t, kib in self.rss if t >= load - window]
        after = [kib for t, kib in self.rss if t >= warmup]
        if len(base) < 3 or len(end) < 3:
            self.fail(f"too few RSS samples ({len(base)} at warm-up, {len(end)} at the end)")
            return
        b, e = statistics.median(base), statistics.median(end)
        drift = (e - b) / b * 100
        self.figures["rss"] = {"warmup_s": warmup, "window_s": window, "samples": len(self.rss),
                               "start_mib": round(self.rss[0][1] / 1024, 1), "warmup_mib": round(b / 1024, 1),
                               "end_mib": round(e / 1024, 1), "max_after_warmup_mib": round(max(after) / 1024, 1),
                               "drift_pct": round(drift, 2),
                               # The run's course, every 10 s: (s, RSS MiB) and (s, allocated MiB, heap MiB).
                               "series": [(round(t), round(kib / 1024, 1)) for t, kib in self.rss[::10]],
                               "heap_series": [(round(t), round(a / 1024, 1), round(hs / 1024, 1)) for t, a, hs in self.heap[::2]]}
        if drift >= self.args.max_rss_drift:
            self.fail(f"Envoy RSS drifted {drift:.2f}% after warm-up ({b / 1024:.1f} -> {e / 1024:.1f} MiB), "
                      f"limit {self.args.max_rss_drift}%")

    # --- hostile guests and refusals

    def check_hostile_and_refusals(self, envoy):
        samples = thaw_metrics(envoy)
        hostile = {
            "b-loop": ("envoy_thaw_wasm_deadline_exceeded_total", "the CPU deadline"),
            "b-bomb": ("envoy_thaw_wasm_memory_cap_hit_total", "the memory cap"),
            "b-trap": ("envoy_thaw_wasm_guest_trap_total", "a trap"),
        }
        figures = {}
        for tenant, (name, what) in hostile.items():
            failed = metric(samples, name, tenant=tenant)
            quarantined = metric(samples, "envoy_thaw_wasm_quarantined_request_total", tenant=tenant)
            figures[tenant] = {name.replace("envoy_thaw_", ""): failed, "quarantined_requests": quarantined}
            if failed <= 0:
                self.fail(f"hostile tenant {tenant}: no request ever hit {what} ({name} is 0)")
        # No stable tenant ever failed as a guest.
        for tenant in sorted(STABLE - set(hostile)):
            for name in ("envoy_thaw_wasm_guest_trap_total", "envoy_thaw_wasm_deadline_exceeded_total",
                         "envoy_thaw_wasm_memory_cap_hit_total", "envoy_thaw_wasm_quarantined_request_total"):
                if metric(samples, name, tenant=tenant):
                    self.fail(f"stable tenant {tenant}: {name} is {metric(samples, name, tenant=tenant)}")
        self.figures["hostile"] = figures
        refused = {}
        for tenant, count in sorted(self.refusals_expected.items()):
            seen = metric(samples, "envoy_thaw_wasm_artifact_refused", tenant=tenant, reason="signature")
            refused[tenant] = {"pushed": count, "counted": seen}
            if seen != count:
                self.fail(f"tenant {tenant}: {count} refused artifacts pushed, wasm_artifact_refused says {seen}")
        self.figures["refusals"] = refused

    # --- the stable tenants before the load starts

    def check_stable_once(self):
        for listener in LISTENERS:
            port = self.ports[listener]
            for name, t in self.state[listener].items():
                if t.guest == "chaos":
                    status, body = request(port, name, {"x-chaos": "trap"})
                    ok = status == 503
                elif t.guest == "auth":
                    status, body = request(port, name, {"authorization": "Bearer s3cret"})
                    ok = status == 200 and '"subject": "alice"' in body
                else:
                    status, body = request(port, name, {"x-secret": f"{name}/start"})
                    ok = status == 200 and body.startswith("previous=")
                if not ok:
                    raise RuntimeError(f"tenant {name} on {listener} answered {status} {body!r} before the load")

    # --- churn

    def warmup_s(self):
        """The warm-up: the first quarter of the load, 60 s to 5 min. Its first 60 s churn fast."""
        return max(60.0, min(300.0, self.seconds / 4))

    def churn(self, envoy, deadline):
        """Pushes until the load ends: every --warmup-reload-every seconds during the first 60 s
        (the warm-up burst: it fills the bounded caches a reload churns through, such as the
        pooling allocator's instance slots (each new module's instances take slots that then stay
        resident up to 2 MiB), quickly, so the RSS measured after warm-up shows what keeps
        growing), then every --reload-every seconds."""
        pushes = 0
        burst_end = self.t0 + BURST_S
        max_pushes = int(BURST_S / self.args.warmup_reload_every) + int(self.seconds / self.args.reload_every) + 2
        next_at = time.monotonic() + self.args.warmup_reload_every
        while pushes < max_pushes and time.monotonic() < deadline - 1:
            time.sleep(max(0.0, min(next_at, deadline) - time.monotonic()))
            if time.monotonic() >= deadline - 1:
                break
            now = time.monotonic()
            next_at = max(next_at, now) + (self.args.warmup_reload_every if now < burst_end else self.args.reload_every)
            if now < burst_end:
                self.figures["warmup_pushes"] = self.figures.get("warmup_pushes", 0) + 1
            try:
                accounted = self.push(envoy, MUTATIONS[pushes % len(MUTATIONS)], pushes)
            except OSError as e:
                self.fail(f"push {pushes}: Envoy's admin endpoint or a listener stopped answering: {e}")
                accounted = False
            pushes += 1
            if not accounted:
                # Envoy and the driver disagree on what the listeners are: later pushes would be
                # checked against the wrong config. The failure is recorded; the load runs on.
                self.figures["pushes"] = pushes
                return
        self.figures["pushes"] = pushes
        self.figures["mutations"] = self.mutations
        self.figures["push_checks"] = {k: v for k, v in self.pushes.items() if k.endswith("checks")}
        if pushes < max(3, int((self.seconds - BURST_S) / self.args.reload_every) // 2):
            self.fail(f"only {pushes} pushes in {self.seconds:.0f} s")
        for m, n in self.mutations.items():
            if n == 0:
                self.fail(f"no push did `{m}`")

    def mutate(self, kind, proposed):
        """Changes `proposed` by one mutation of `kind`; returns (the listener that must reject it or
        None, the churn tenants it changed as [(listener, name)], the mutation done)."""
        rng = self.rng
        changed = []

        def slots(listener, present):
            return [s for s in CHURN_SLOTS[listener] if (s in proposed[listener]) == present]

        def fresh(listener):
            guest = rng.choice(["probe", "probe", "auth", "chaos"])
            knobs = dict(HOSTILE if guest == "chaos" else WELL_BEHAVED)
            return Tenant(guest, rng.choice(["per_request", "pooled"]), rng.choice(["v1", "v2"]), rng.randrange(1000), knobs)

        listener = rng.choice(LISTENERS)
        if kind == "add":
            free = slots(listener, False) or slots(listener := [l for l in LISTENERS if l != listener][0], False)
            if free:
                name = rng.choice(free)
                proposed[listener][name] = fresh(listener)
                changed.append((listener, name))
            else:
                kind = "remove"
        if kind in ("remove", "change_artifact", "change_config", "change_kind"):
            present = slots(listener, True) or slots(listener := [l for l in LISTENERS if l != listener][0], True)
            if not present:
                name = rng.choice(CHURN_SLOTS[listener])
                proposed[listener][name] = fresh(listener)
                changed.append((listener, name))
                return None, changed, "add"
            name = rng.choice(present)
            t = proposed[listener][name]
            if kind == "remove":
                del proposed[listener][name]
            elif kind == "change_artifact":
                t.variant = "v2" if t.variant != "v2" else "v1"
            elif kind == "change_config":
                t.rev += 1
            else:
                proposed[listener][name] = fresh(listener)
            changed.append((listener, name))
        elif kind == "stable_artifact":
            # The loaded tenants' artifacts: v1 <-> v2 (other bytes, same behaviour).
            for listener in LISTENERS:
                for name, t in proposed[listener].items():
                    if name in STABLE:
                        t.variant = "v2" if t.variant == "v1" else "v1"
        elif kind in ("tamper_strict", "tamper_lenient"):
            listener = "strict" if kind == "tamper_strict" else "lenient"
            name = rng.choice(CHURN_SLOTS[listener])
            t = proposed[listener].get(name) or fresh(listener)
            t = dataclasses.replace(t, variant=rng.choice(["tampered", "foreign"]))
            proposed[listener][name] = t
            changed.append((listener, name))
            return (listener if listener == "strict" else None), changed, kind
        return None, changed, kind

    def push(self, envoy, kind, n):
        proposed = copy.deepcopy(self.state)
        rejected_by, changed, kind = self.mutate(kind, proposed)
        self.mutations[kind] = self.mutations.get(kind, 0) + 1
        if rejected_by is None:
            # Every other push also changes the loaded tenants' plugin configs (auth: the rotating
            # token), so both listeners' filter configs are created anew each time.
            for listener in LISTENERS:
                for name, t in proposed[listener].items():
                    if name in STABLE:
                        t.rev += 1
        else:
            # Only the listener that must reject it changes: the other stays as it is.
            for listener in LISTENERS:
                if listener != rejected_by:
                    proposed[listener] = copy.deepcopy(self.state[listener])
        before = counters(envoy, "listener_manager.lds.")
        h.write_lds(self.lds, render(self.builds, proposed, self.ports, self.upstream.port))
        outcome = self.wait_accounted(envoy, before)
        expected = "rejected" if rejected_by else "applied"
        if outcome != expected:
            self.fail(f"push {n} ({kind}): expected {expected}, Envoy: {outcome}")
            return False
        if outcome == "rejected":
            self.pushes["rejected"] += 1
        elif outcome == "applied":
            self.pushes["applied"] += 1
        # thaw counts a refusal each time a config naming a refused artifact is created: every
        # accepted push re-creates both listeners' configs (their loaded tenants changed), and a
        # rejected one the strict listener's.
        if outcome in ("applied", "rejected"):
            for listener in ([rejected_by] if outcome == "rejected" else LISTENERS):
                for name, t in proposed[listener].items():
                    if t.refused:
                        self.refusals_expected[name] = self.refusals_expected.get(name, 0) + 1
        with open(self.dir / "pushes.jsonl", "a") as log:
            log.write(json.dumps({"n": n, "t": round(time.monotonic() - self.t0, 2), "kind": kind, "expected": expected,
                                  "outcome": outcome, "changed": changed}) + "\n")
        old = self.state
        if outcome == "applied":
            self.state = proposed
        # Every changed churn tenant answers as the config now serving says (a rejected push: the
        # old one), and one churn slot more, at random, which should not have changed.
        check = set(changed) | {(l, self.rng.choice(CHURN_SLOTS[l])) for l in [self.rng.choice(LISTENERS)]}
        for listener, name in sorted(check):
            expect = Expect(self.ports[listener], name, self.state[listener].get(name), listener,
                            previous=old[listener].get(name))
            self.verify(expect, n, kind)
        return True

    def wait_accounted(self, envoy, before):
        """Waits (at most 30 s) until Envoy's LDS counters move: "applied", "rejected" or "timeout"."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = counters(envoy, "listener_manager.lds.")
            key = "listener_manager.lds."
            if now.get(key + "update_rejected", 0) > before.get(key + "update_rejected", 0):
                return "rejected"
            if now.get(key + "update_success", 0) > before.get(key + "update_success", 0):
                return "applied"
            time.sleep(0.05)
        return "timeout"

    def verify(self, expect, n, kind):
        """Retries (at most 10 s or 100 tries: workers take up a new listener shortly after Envoy
        accepts it)."""
        deadline = time.monotonic() + 10
        tries = 0
        while True:
            tries += 1
            try:
                seen = expect.check(f"{n}.{tries}")
            except (OSError, http.client.HTTPException) as e:
                seen = f"error {e!r}"
            if seen is None or seen.startswith("LEAK") or time.monotonic() > deadline or tries >= 100:
                break
            time.sleep(0.1)
        self.pushes["verified_checks"] += 1
        if tries > 1:
            self.pushes["retried_checks"] += 1
        if seen is not None:
            self.fail(f"push {n} ({kind}): tenant {expect.name} on {expect.listener} should be {expect.describe()}; "
                      f"after {tries} tries it answered {seen}")

    # --- report

    def report(self):
        f = self.figures
        f["failures"] = self.failures
        f["passed"] = not self.failures
        if self.args.report:
            Path(self.args.report).write_text(json.dumps(f, indent=2, sort_keys=True) + "\n")
        print("\n== soak figures ==")
        print(json.dumps({k: v for k, v in f.items() if k not in ("failures",)}, indent=2, sort_keys=True))
        if self.failures:
            print(f"\nsoak FAILED ({len(self.failures)}):")
            for x in self.failures[:50]:
                print(f"  - {x}")
            print(f"(Envoy's log and wrk's output are in {self.dir})")
        else:
            print("\nsoak passed")
            if not self.args.keep:
                h.cleanup(self.dir)
        return 0 if not self.failures else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="how long wrk loads Envoy (default 2)")
    p.add_argument("--reload-every", type=float, default=3.0, help="seconds between listener file rewrites")
    p.add_argument("--warmup-reload-every", type=float, default=0.5,
                   help=f"seconds between rewrites during the first {BURST_S:.0f} s (the warm-up burst)")
    p.add_argument("--seed", type=int, default=None, help="the churn's random seed (default: drawn, printed)")
    p.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads")
    p.add_argument("--drain-time", type=int, default=3, help="Envoy --drain-time-s: how long a replaced listener drains")
    p.add_argument("--delay-ms", type=int, default=0, help="wrk think time per probe/auth connection")
    p.add_argument("--hostile-delay-ms", type=int, default=20, help="wrk think time of the hostile connection")
    p.add_argument("--min-probe-rps", type=float, default=1e6 / 1800,
                   help="probe requests per second of load required (default: 10^6 per 30 minutes)")
    p.add_argument("--max-rss-drift", type=float, default=5.0, help="largest RSS growth after warm-up, percent")
    p.add_argument("--max-socket-errors", type=int, default=0, help="wrk socket errors tolerated per wrk process")
    p.add_argument("--report", help="write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory even when the soak passes")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
