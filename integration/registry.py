"""A real OCI registry for the tests: Debian's docker-registry (CNCF distribution 2.8) on a free
loopback port, filesystem storage in a work dir, optionally behind htpasswd basic auth (bcrypt at
a low cost: cost 12 makes 32 requests take 10 s). Plus the real oras and cosign pointed at it.
"""

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import ROOT, free_port

REGISTRY_BIN = os.environ.get("REGISTRY_BIN", "/usr/bin/docker-registry")
ORAS = os.environ.get("ORAS_BIN", str(ROOT / "build" / "tools" / "oras"))
COSIGN = os.environ.get("COSIGN_BIN", str(ROOT / "build" / "tools" / "cosign"))
COSIGN_PASSWORD = "thaw-test"


class Registry:
    def __init__(self, workdir, user=None, password=None):
        self.dir = Path(workdir) / f"registry-{free_port()}"
        self.storage = self.dir / "storage"
        self.storage.mkdir(parents=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.user, self.password = user, password
        auth = ""
        if user:
            htpasswd = self.dir / "htpasswd"
            subprocess.run(["htpasswd", "-B", "-C", "5", "-b", "-c", str(htpasswd), user, password],
                           check=True, capture_output=True)
            auth = f"auth:\n  htpasswd:\n    realm: thaw-test\n    path: {htpasswd}\n"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
            + auth)
        self.log = open(self.dir / "registry.log", "w")
        self.process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401: up, and asking for credentials
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the registry did not start: {(self.dir / 'registry.log').read_text()}")

    def ref(self, repository, tag="1.0"):
        return f"{self.host}/{repository}:{tag}"

    def blob_path(self, digest):
        """Where the filesystem driver keeps a blob's bytes (to tamper with them)."""
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

    def env(self):
        """The environment for thaw, oras and cosign: credentials when the registry wants them,
        isolated HOME and TUF_ROOT (nothing read from or written to the user's)."""
        env = dict(os.environ, HOME=str(self.dir / "home"), TUF_ROOT=str(self.dir / "tuf"),
                   COSIGN_PASSWORD=COSIGN_PASSWORD, COSIGN_YES="true", DOCKER_CONFIG=str(self.dir / "docker"))
        if self.user:
            env.update(THAW_REGISTRY_USERNAME=self.user, THAW_REGISTRY_PASSWORD=self.password)
        return env

    def oras(self, *args, check=True, cwd=None):
        """Runs oras against this registry (flags after the arguments: oras takes them anywhere)."""
        creds = ["-u", self.user, "-p", self.password] if self.user else []
        p = subprocess.run([ORAS, *map(str, args), "--plain-http", *creds], env=self.env(),
                           capture_output=True, text=True, timeout=120, cwd=cwd or self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"oras {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}")
        return p

    def cosign(self, *args, check=True):
        p = subprocess.run([COSIGN, *map(str, args)], env=self.env(), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120, cwd=self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"cosign {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}")
        return p

    def cosign_key_pair(self, name="cosign"):
        """A key pair by `cosign generate-key-pair` (the only private key format cosign signs with)."""
        prefix = self.dir / name
        self.cosign("generate-key-pair", "--output-key-prefix", prefix)
        return Path(f"{prefix}.key"), Path(f"{prefix}.pub")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
