/* The authorization logic shared by c-auth-abi010 and c-auth-abi020 (only the ABI glue differs):
 *   request:  `authorization` must be exactly "Bearer c-good", else a local 403 "c-denied";
 *             allowed requests get `x-c-auth: ok` and `x-c-empty` with an EMPTY value.
 *   response: every response gets `x-c-saw-response: 1`. */
#ifndef C_AUTH_COMMON_H
#define C_AUTH_COMMON_H

#include "proxy_wasm_raw.h"

static int32_t c_auth_request_headers(void) {
    const char *value = 0;
    size_t value_len = 0;
    int32_t st = proxy_get_header_map_value(PW_REQUEST_HEADERS, PW_STR("authorization"), &value, &value_len);
    if (st != PW_OK || !pw_equal(value, value_len, "Bearer c-good")) {
        /* No details, no extra headers, grpc_status -1 (none). */
        proxy_send_local_response(403, "", 0, PW_STR("c-denied"), "", 0, -1);
        return PW_PAUSE;
    }
    proxy_add_header_map_value(PW_REQUEST_HEADERS, PW_STR("x-c-auth"), PW_STR("ok"));
    /* An empty value: a valid pointer with length 0. */
    proxy_add_header_map_value(PW_REQUEST_HEADERS, PW_STR("x-c-empty"), "", 0);
    return PW_CONTINUE;
}

static int32_t c_auth_response_headers(void) {
    proxy_add_header_map_value(PW_RESPONSE_HEADERS, PW_STR("x-c-saw-response"), PW_STR("1"));
    return PW_CONTINUE;
}

/* "<name> configured: <plugin configuration>\n" into `out` (at most `cap` bytes); returns the length. */
static size_t c_auth_config_line(const char *name, size_t config_size, char *out, size_t cap) {
    size_t n = 0;
    for (const char *p = name; *p && n < cap; p++) out[n++] = *p;
    for (const char *p = " configured: "; *p && n < cap; p++) out[n++] = *p;
    const char *config = 0;
    size_t len = 0;
    if (config_size > 0 &&
        proxy_get_buffer_bytes(PW_PLUGIN_CONFIGURATION, 0, config_size, &config, &len) == PW_OK) {
        for (size_t i = 0; i < len && n < cap; i++) out[n++] = config[i];
    }
    if (n < cap) out[n++] = '\n';
    return n;
}

/* The root context's callbacks both guests have alike: nothing to create, any VM configuration. */
PW_EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t context_id, uint32_t parent_id) {
    (void)context_id;
    (void)parent_id;
}

PW_EXPORT(proxy_on_vm_start) int32_t proxy_on_vm_start(uint32_t root_id, size_t vm_config_size) {
    (void)root_id;
    (void)vm_config_size;
    return 1;
}

#endif
