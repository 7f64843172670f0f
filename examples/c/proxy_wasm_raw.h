/* Raw proxy-wasm ABI for the C example guests: no SDK, only the declarations they use.
 *
 * Every host function is imported from module "env" and returns a proxy_status_t (i32);
 * results come back through out-pointers. Pointers and sizes are i32 (wasm32).
 * Numbers are those of proxy-wasm ABI 0.2.1 (0.1.0 and 0.2.0 use the same values). */
#ifndef PROXY_WASM_RAW_H
#define PROXY_WASM_RAW_H

#include <stddef.h>
#include <stdint.h>

#define PW_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define PW_EXPORT(name) __attribute__((export_name(#name)))

/* proxy_status_t */
enum { PW_OK = 0, PW_NOT_FOUND = 1, PW_BAD_ARGUMENT = 2, PW_INVALID_MEMORY_ACCESS = 6 };
/* proxy_action_t, returned by the stream callbacks */
enum { PW_CONTINUE = 0, PW_PAUSE = 1 };
/* proxy_map_type_t */
enum { PW_REQUEST_HEADERS = 0, PW_RESPONSE_HEADERS = 2 };
/* proxy_buffer_type_t */
enum { PW_PLUGIN_CONFIGURATION = 7 };
/* proxy_log_level_t */
enum { PW_LOG_INFO = 2 };

PW_IMPORT(proxy_log)
int32_t proxy_log(int32_t level, const char *msg, size_t len);
PW_IMPORT(proxy_get_buffer_bytes)
int32_t proxy_get_buffer_bytes(int32_t type, size_t start, size_t max, const char **data, size_t *size);
PW_IMPORT(proxy_get_header_map_value)
int32_t proxy_get_header_map_value(int32_t map, const char *key, size_t key_len, const char **value, size_t *value_len);
PW_IMPORT(proxy_add_header_map_value)
int32_t proxy_add_header_map_value(int32_t map, const char *key, size_t key_len, const char *value, size_t value_len);
PW_IMPORT(proxy_send_local_response)
int32_t proxy_send_local_response(int32_t status, const char *details, size_t details_len, const char *body,
                                  size_t body_len, const char *headers, size_t headers_len, int32_t grpc_status);

/* Small helpers (no libc needed). */
static inline size_t pw_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static inline int pw_equal(const char *a, size_t a_len, const char *b) {
    size_t b_len = pw_strlen(b);
    if (a_len != b_len) return 0;
    for (size_t i = 0; i < a_len; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

#define PW_STR(s) (s), (sizeof(s) - 1)

#endif
