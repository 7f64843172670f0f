"""`./bazel-free-build.sh run`: the demo on 127.0.0.1 from envoy/demo.yaml, until Ctrl-C."""

import argparse
import os
import time
from pathlib import Path

import harness as h


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=h.ROOT)
    args = parser.parse_args()
    port = int(os.environ.get("THAW_DEMO_PORT", "10000"))
    admin_port = int(os.environ.get("THAW_DEMO_ADMIN_PORT", "9901"))
    workdir = args.root / "build" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = h.Upstream()
    text = (args.root / "envoy" / "demo.yaml").read_text()
    for key, value in {"@BUILD@": str(args.root / "build"), "@PORT@": str(port), "@ADMIN_PORT@": str(admin_port),
                       "@UPSTREAM_PORT@": str(upstream.port)}.items():
        text = text.replace(key, value)
    with h.Envoy(None, upstream, workdir, config_text=text, port=port, admin_port=admin_port) as envoy:
        base = f"http://127.0.0.1:{port}"
        print(f"""
thaw demo: Envoy 1.40 + libthaw.so + the signed auth filter, upstream echo on :{upstream.port}
Envoy log: {envoy.log_path}

  curl -i {base}/ -H 'x-tenant-id: acme'                                    # 403 missing token
  curl -i {base}/ -H 'x-tenant-id: acme' -H 'authorization: Bearer s3cret'  # 200, subject alice
  curl -i {base}/ -H 'x-tenant-id: globex' -H 'authorization: Bearer s3cret' # 403: not globex's token
  curl -i {base}/ -H 'x-tenant-id: initech'                                 # 403 unknown tenant

Ctrl-C stops.""", flush=True)
        try:
            while envoy.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    upstream.close()


if __name__ == "__main__":
    main()
