/* c-auth-abi010: the C authorization guest on proxy-wasm ABI 0.1.0.
 *
 * Shape on purpose (an old-style guest):
 *  - ABI marker `proxy_abi_version_0_1_0`; 0.1.0 header callbacks take (context_id, num_headers),
 *    with NO end_of_stream (proxy-wasm-cpp-host: on_request_headers_abi_01_ is WasmCallWord<2>);
 *  - WASI imported from the pre-snapshot module `wasi_unstable` (fd_write, proc_exit);
 *  - command-style: exports `_start` (no `_initialize`), no C start files, no libc;
 *  - exports `malloc` (a bump allocator), NOT proxy_on_memory_allocate.
 * on_configure writes "c-auth-abi010 configured: <plugin config>" to stdout with fd_write. */
#include "c_auth_common.h"

typedef struct { const void *buf; size_t len; } ciovec_t;

__attribute__((import_module("wasi_unstable"), import_name("fd_write")))
int32_t wasi_fd_write(int32_t fd, const ciovec_t *iovs, size_t iovs_len, size_t *nwritten);
__attribute__((import_module("wasi_unstable"), import_name("proc_exit")))
_Noreturn void wasi_proc_exit(int32_t code);

/* malloc for the host: a bump allocator over a static arena, reset at the start of every stream
 * callback (nothing the host hands over outlives the callback in this guest). */
static char arena[64 * 1024];
static size_t arena_used;

PW_EXPORT(malloc) void *malloc(size_t size) {
    size_t start = (arena_used + 7) & ~(size_t)7;
    if (start > sizeof(arena) || size > sizeof(arena) - start) return 0;
    arena_used = start + size;
    return arena + start;
}

PW_EXPORT(proxy_abi_version_0_1_0) void proxy_abi_version_0_1_0(void) {}

/* The command entry point; nothing to set up. */
PW_EXPORT(_start) void _start(void) {}

PW_EXPORT(proxy_on_configure) int32_t proxy_on_configure(uint32_t root_id, size_t config_size) {
    (void)root_id;
    arena_used = 0;
    static char line[256];
    ciovec_t iov = {line, c_auth_config_line("c-auth-abi010", config_size, line, sizeof(line))};
    size_t written = 0;
    if (wasi_fd_write(1 /* stdout */, &iov, 1, &written) != 0) {
        /* Never expected: both hosts route stdout to the log. Keeps proc_exit a live import. */
        wasi_proc_exit(1);
    }
    return 1;
}

/* ABI 0.1.0: two arguments, no end_of_stream. */
PW_EXPORT(proxy_on_request_headers) int32_t proxy_on_request_headers(uint32_t context_id, uint32_t num_headers) {
    (void)context_id;
    (void)num_headers;
    arena_used = 0;
    return c_auth_request_headers();
}

PW_EXPORT(proxy_on_response_headers) int32_t proxy_on_response_headers(uint32_t context_id, uint32_t num_headers) {
    (void)context_id;
    (void)num_headers;
    arena_used = 0;
    return c_auth_response_headers();
}
