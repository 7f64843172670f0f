/* c-auth-abi020: the same authorization logic on proxy-wasm ABI 0.2.0.
 *
 * Shape: ABI marker `proxy_abi_version_0_2_0` (3-argument header callbacks); a WASI reactor built
 * with wasi-libc (crt1-reactor: exports `_initialize`); WASI from `wasi_snapshot_preview1`
 * (libc's write() -> fd_write); exports libc's `malloc` (via -Wl,--export=malloc), NOT
 * proxy_on_memory_allocate. on_configure writes "c-auth-abi020 configured: <plugin config>" to
 * stdout. */
#include <unistd.h>

#include "c_auth_common.h"

PW_EXPORT(proxy_abi_version_0_2_0) void proxy_abi_version_0_2_0(void) {}

PW_EXPORT(proxy_on_configure) int32_t proxy_on_configure(uint32_t root_id, size_t config_size) {
    (void)root_id;
    static char line[256];
    size_t n = c_auth_config_line("c-auth-abi020", config_size, line, sizeof(line));
    /* write(2) on fd 1: wasi_snapshot_preview1.fd_write; the host turns stdout into log lines. */
    (void)write(1, line, n);
    return 1;
}

/* ABI 0.2.x: (context_id, num_headers, end_of_stream). */
PW_EXPORT(proxy_on_request_headers)
int32_t proxy_on_request_headers(uint32_t context_id, uint32_t num_headers, uint32_t end_of_stream) {
    (void)context_id;
    (void)num_headers;
    (void)end_of_stream;
    return c_auth_request_headers();
}

PW_EXPORT(proxy_on_response_headers)
int32_t proxy_on_response_headers(uint32_t context_id, uint32_t num_headers, uint32_t end_of_stream) {
    (void)context_id;
    (void)num_headers;
    (void)end_of_stream;
    return c_auth_response_headers();
}
