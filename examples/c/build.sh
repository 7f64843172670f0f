#!/usr/bin/env bash
# Builds every C guest in this directory into OUTDIR/<name>.wasm with clang-19 and Debian's
# wasi-libc (sysroot /usr). Offline and idempotent: a guest is rebuilt only when its source, a
# header or this script is newer than its output.
#   usage: examples/c/build.sh OUTDIR
set -euo pipefail

OUT="${1:?usage: $0 OUTDIR}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CC="${CC_WASM:-clang-19}"
command -v "$CC" >/dev/null || { echo "build.sh: $CC not found (apt-get install -y --no-install-recommends clang-19)" >&2; exit 1; }
mkdir -p "$OUT"

# The common flags. clang-19 links with its wasm-ld (lld-19). compiler-rt's wasm32 builtins are not
# installed here and not needed, hence -nodefaultlibs (with -lc where libc is used at all).
COMMON=(--target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -Werror
        -Wl,--strip-debug)

# name -> extra flags
declare -A FLAGS=(
  # command module: its own _start, no crt, no libc (imports only what the source declares)
  [c-auth-abi010]="-nostartfiles -nostdlib"
  # reactor with wasi-libc's crt1-reactor (_initialize) and libc's malloc, exported
  [c-auth-abi020]="-mexec-model=reactor -nodefaultlibs -lc -Wl,--export=malloc"
  # reactor, freestanding: its own _initialize and proxy_on_memory_allocate
  [c-hostile-args]="-mexec-model=reactor -nostartfiles -nostdlib"
  # the hostcall fuzzer's harness (fuzz/): freestanding like c-hostile-args, with a fixed memory of
  # 8 pages (initial = maximum: it never grows), an explicit 64 KiB stack below __heap_base, and
  # bulk memory (memory.copy/fill for the copies clang would otherwise call memcpy/memset for)
  [c-fuzz-hostcalls]="-mexec-model=reactor -nostartfiles -nostdlib -mbulk-memory -Wl,--initial-memory=524288 -Wl,--max-memory=524288 -Wl,-z,stack-size=65536"
)

for name in "${!FLAGS[@]}"; do
  src="$HERE/$name.c" out="$OUT/$name.wasm"
  newest="$(ls -t "$src" "$HERE"/*.h "$HERE/build.sh" | head -n1)"
  if [[ -f "$out" && "$out" -nt "$newest" ]]; then
    continue
  fi
  # shellcheck disable=SC2086
  "$CC" "${COMMON[@]}" ${FLAGS[$name]} -o "$out.tmp" "$src"
  mv "$out.tmp" "$out"
  echo "built $out"
done
