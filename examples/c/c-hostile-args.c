/* c-hostile-args: a proxy-wasm ABI 0.2.1 guest that calls host functions with hostile arguments
 * from proxy_on_request_headers and answers with a local 200 reply whose body lists every returned
 * status, one line per case: `name/case=status`. Run under two hosts, the bodies must be equal.
 *
 * Cases, where they apply: a pointer out of bounds (OOB = 0xFFFFFF00, also with length 0), an
 * in-bounds pointer with a huge length (0x7FFFFFFF) and with one byte too many
 * (memory_size - ptr + 1), an out-pointer out of bounds (or straddling the end of memory), an
 * unknown enum value (map/buffer/metric/stream type, log level), zero lengths.
 *
 * Deliberately absent (they would send traffic, change state beyond this request, or are unsafe in
 * Envoy's own host): proxy_http_call/grpc_call to a real cluster (every call here names the
 * unknown cluster "nope"), close_stream with a valid type, continue_stream(HTTP_REQUEST/RESPONSE),
 * a zero-length gRPC service (Envoy parses it as an empty GrpcService proto), serialized maps whose
 * pair lengths overrun their buffer (Envoy's toPairs does not check them), an empty header name,
 * set_header_map_pairs of an empty map on the live request headers (it would drop :path etc.).
 *
 * Freestanding: no libc, a reactor exporting its own `_initialize`, `proxy_on_memory_allocate` (a
 * bump allocator reset per request). */
#include <stddef.h>
#include <stdint.h>

#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

typedef uint32_t u32;
typedef int32_t i32;

/* Host functions, every pointer as a plain u32 so hostile values pass unchanged. */
IMPORT(proxy_log) i32 proxy_log(u32 level, u32 msg, u32 len);
IMPORT(proxy_get_log_level) i32 proxy_get_log_level(u32 out);
IMPORT(proxy_get_current_time_nanoseconds) i32 proxy_get_current_time_nanoseconds(u32 out);
IMPORT(proxy_get_header_map_value) i32 proxy_get_header_map_value(u32 map, u32 key, u32 key_len, u32 val_pp, u32 val_len_p);
IMPORT(proxy_add_header_map_value) i32 proxy_add_header_map_value(u32 map, u32 key, u32 key_len, u32 val, u32 val_len);
IMPORT(proxy_replace_header_map_value) i32 proxy_replace_header_map_value(u32 map, u32 key, u32 key_len, u32 val, u32 val_len);
IMPORT(proxy_remove_header_map_value) i32 proxy_remove_header_map_value(u32 map, u32 key, u32 key_len);
IMPORT(proxy_get_header_map_pairs) i32 proxy_get_header_map_pairs(u32 map, u32 pp, u32 size_p);
IMPORT(proxy_set_header_map_pairs) i32 proxy_set_header_map_pairs(u32 map, u32 ptr, u32 size);
IMPORT(proxy_get_header_map_size) i32 proxy_get_header_map_size(u32 map, u32 size_p);
IMPORT(proxy_get_buffer_bytes) i32 proxy_get_buffer_bytes(u32 type, u32 start, u32 max, u32 pp, u32 size_p);
IMPORT(proxy_set_buffer_bytes) i32 proxy_set_buffer_bytes(u32 type, u32 start, u32 size, u32 data, u32 data_len);
IMPORT(proxy_get_buffer_status) i32 proxy_get_buffer_status(u32 type, u32 len_p, u32 flags_p);
IMPORT(proxy_get_property) i32 proxy_get_property(u32 path, u32 path_len, u32 pp, u32 size_p);
IMPORT(proxy_set_property) i32 proxy_set_property(u32 path, u32 path_len, u32 val, u32 val_len);
IMPORT(proxy_get_shared_data) i32 proxy_get_shared_data(u32 key, u32 key_len, u32 pp, u32 size_p, u32 cas_p);
IMPORT(proxy_set_shared_data) i32 proxy_set_shared_data(u32 key, u32 key_len, u32 val, u32 val_len, u32 cas);
IMPORT(proxy_register_shared_queue) i32 proxy_register_shared_queue(u32 name, u32 name_len, u32 id_p);
IMPORT(proxy_resolve_shared_queue) i32 proxy_resolve_shared_queue(u32 vm, u32 vm_len, u32 name, u32 name_len, u32 id_p);
IMPORT(proxy_enqueue_shared_queue) i32 proxy_enqueue_shared_queue(u32 id, u32 val, u32 val_len);
IMPORT(proxy_dequeue_shared_queue) i32 proxy_dequeue_shared_queue(u32 id, u32 pp, u32 size_p);
IMPORT(proxy_define_metric) i32 proxy_define_metric(u32 type, u32 name, u32 name_len, u32 id_p);
IMPORT(proxy_increment_metric) i32 proxy_increment_metric(u32 id, int64_t delta);
IMPORT(proxy_record_metric) i32 proxy_record_metric(u32 id, uint64_t value);
IMPORT(proxy_get_metric) i32 proxy_get_metric(u32 id, u32 out);
IMPORT(proxy_http_call) i32 proxy_http_call(u32 up, u32 up_len, u32 hdr, u32 hdr_len, u32 body, u32 body_len, u32 trl,
                                            u32 trl_len, u32 timeout_ms, u32 token_p);
IMPORT(proxy_grpc_call) i32 proxy_grpc_call(u32 svc, u32 svc_len, u32 name, u32 name_len, u32 method, u32 method_len,
                                            u32 md, u32 md_len, u32 req, u32 req_len, u32 timeout_ms, u32 token_p);
IMPORT(proxy_grpc_stream) i32 proxy_grpc_stream(u32 svc, u32 svc_len, u32 name, u32 name_len, u32 method, u32 method_len,
                                                u32 md, u32 md_len, u32 token_p);
IMPORT(proxy_grpc_send) i32 proxy_grpc_send(u32 token, u32 msg, u32 msg_len, u32 end_stream);
IMPORT(proxy_grpc_cancel) i32 proxy_grpc_cancel(u32 token);
IMPORT(proxy_grpc_close) i32 proxy_grpc_close(u32 token);
IMPORT(proxy_call_foreign_function) i32 proxy_call_foreign_function(u32 name, u32 name_len, u32 args, u32 args_len,
                                                                    u32 res_pp, u32 res_len_p);
IMPORT(proxy_set_effective_context) i32 proxy_set_effective_context(u32 context_id);
IMPORT(proxy_get_status) i32 proxy_get_status(u32 code_p, u32 msg_pp, u32 msg_len_p);
IMPORT(proxy_continue_stream) i32 proxy_continue_stream(u32 stream_type);
IMPORT(proxy_close_stream) i32 proxy_close_stream(u32 stream_type);
IMPORT(proxy_send_local_response) i32 proxy_send_local_response(u32 status, u32 details, u32 details_len, u32 body,
                                                                u32 body_len, u32 hdrs, u32 hdrs_len, i32 grpc_status);

/* ---- memory: a bump allocator for the host, reset at the start of every request ---- */
static char arena[256 * 1024];
static u32 arena_used;

EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(u32 size) {
    u32 start = (arena_used + 7) & ~7u;
    if (start > sizeof(arena) || size > sizeof(arena) - start) return 0;
    arena_used = start + size;
    return arena + start;
}

/* ---- the report ---- */
static char report[32 * 1024];
static u32 report_len;

static void put(const char *s) {
    while (*s && report_len < sizeof(report)) report[report_len++] = *s++;
}

static void put_int(i32 v) {
    char digits[12];
    int n = 0;
    u32 u = v < 0 ? (u32)(-(int64_t)v) : (u32)v;
    if (v < 0) put("-");
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n) {
        char c[2] = {digits[--n], 0};
        put(c);
    }
}

static void record(const char *name, const char *cas, i32 status) {
    put(name);
    put("/");
    put(cas);
    put("=");
    put_int(status);
    put("\n");
}

/* One case: `fn/case=<status of call>`. */
#define CASE(fn, cas, call) record(#fn, cas, (call))

/* ---- hostile values ---- */
#define OOB 0xFFFFFF00u
#define HUGE 0x7FFFFFFFu
#define P(x) ((u32)(uintptr_t)(x))
static u32 mem_size(void) { return (u32)__builtin_wasm_memory_size(0) * 65536u; }
/* A length one byte past the end of memory from `ptr`. */
static u32 over(u32 ptr) { return mem_size() - ptr + 1; }
/* An out-pointer whose 4- or 8-byte write would straddle the end of memory. */
static u32 edge(void) { return mem_size() - 2; }

static u32 slen(const char *s) {
    u32 n = 0;
    while (s[n]) n++;
    return n;
}
#define S(s) P(s), slen(s)

/* Out-parameters the host may legitimately write. */
static u32 out_ptr, out_len, out_cas, out_u32;
static uint64_t out_u64;

/* A serialized header map for proxy_http_call: :method GET, :path /, :authority nope. */
static const char call_headers[] =
    "\x03\x00\x00\x00"
    "\x07\x00\x00\x00\x03\x00\x00\x00"
    "\x05\x00\x00\x00\x01\x00\x00\x00"
    "\x0a\x00\x00\x00\x04\x00\x00\x00"
    ":method\0GET\0"
    ":path\0/\0"
    ":authority\0nope\0";
#define CALL_HEADERS_LEN (sizeof(call_headers) - 1)

static const char empty[] = "";
static const char msg[] = "c-hostile-args log line";

static void logging(void) {
    CASE(proxy_log, "ok", proxy_log(2, S(msg)));
    CASE(proxy_log, "oob", proxy_log(2, OOB, 4));
    CASE(proxy_log, "oob_zero_len", proxy_log(2, OOB, 0));
    CASE(proxy_log, "huge_len", proxy_log(2, P(msg), HUGE));
    CASE(proxy_log, "over_len", proxy_log(2, P(msg), over(P(msg))));
    CASE(proxy_log, "bad_level", proxy_log(99, S(msg)));
    CASE(proxy_log, "zero_len", proxy_log(2, P(msg), 0));
    CASE(proxy_get_log_level, "ok", proxy_get_log_level(P(&out_u32)));
    CASE(proxy_get_log_level, "out_oob", proxy_get_log_level(OOB));
    CASE(proxy_get_log_level, "out_edge", proxy_get_log_level(edge()));
    CASE(proxy_get_current_time_nanoseconds, "ok", proxy_get_current_time_nanoseconds(P(&out_u64)));
    CASE(proxy_get_current_time_nanoseconds, "out_oob", proxy_get_current_time_nanoseconds(OOB));
    CASE(proxy_get_current_time_nanoseconds, "out_edge", proxy_get_current_time_nanoseconds(mem_size() - 4));
}

static const char key[] = "x-hostile";

static void header_maps(void) {
    const u32 K = P(key), KL = slen(key);
    CASE(proxy_get_header_map_value, "ok", proxy_get_header_map_value(0, K, KL, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "missing", proxy_get_header_map_value(0, S("x-nope"), P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "key_oob", proxy_get_header_map_value(0, OOB, 4, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "key_oob_zero_len", proxy_get_header_map_value(0, OOB, 0, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "key_huge_len", proxy_get_header_map_value(0, K, HUGE, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "key_over_len", proxy_get_header_map_value(0, K, over(K), P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "value_ptr_oob", proxy_get_header_map_value(0, K, KL, OOB, P(&out_len)));
    CASE(proxy_get_header_map_value, "value_len_oob", proxy_get_header_map_value(0, K, KL, P(&out_ptr), OOB));
    CASE(proxy_get_header_map_value, "value_len_edge", proxy_get_header_map_value(0, K, KL, P(&out_ptr), edge()));
    CASE(proxy_get_header_map_value, "bad_map", proxy_get_header_map_value(99, K, KL, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "map_not_now", proxy_get_header_map_value(2, K, KL, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_value, "zero_key", proxy_get_header_map_value(0, P(empty), 0, P(&out_ptr), P(&out_len)));

    CASE(proxy_add_header_map_value, "key_oob", proxy_add_header_map_value(0, OOB, 4, S("v")));
    CASE(proxy_add_header_map_value, "key_huge_len", proxy_add_header_map_value(0, K, HUGE, S("v")));
    CASE(proxy_add_header_map_value, "key_over_len", proxy_add_header_map_value(0, K, over(K), S("v")));
    CASE(proxy_add_header_map_value, "value_oob", proxy_add_header_map_value(0, S("x-hostile-add"), OOB, 4));
    CASE(proxy_add_header_map_value, "value_huge_len", proxy_add_header_map_value(0, S("x-hostile-add"), K, HUGE));
    CASE(proxy_add_header_map_value, "value_over_len", proxy_add_header_map_value(0, S("x-hostile-add"), K, over(K)));
    CASE(proxy_add_header_map_value, "bad_map", proxy_add_header_map_value(99, S("x-hostile-add"), S("v")));
    CASE(proxy_add_header_map_value, "map_not_now", proxy_add_header_map_value(2, S("x-hostile-add"), S("v")));
    CASE(proxy_add_header_map_value, "zero_value", proxy_add_header_map_value(0, S("x-hostile-add"), P(empty), 0));

    CASE(proxy_replace_header_map_value, "key_oob", proxy_replace_header_map_value(0, OOB, 4, S("v")));
    CASE(proxy_replace_header_map_value, "key_huge_len", proxy_replace_header_map_value(0, K, HUGE, S("v")));
    CASE(proxy_replace_header_map_value, "key_over_len", proxy_replace_header_map_value(0, K, over(K), S("v")));
    CASE(proxy_replace_header_map_value, "value_oob", proxy_replace_header_map_value(0, S("x-hostile-rep"), OOB, 4));
    CASE(proxy_replace_header_map_value, "value_huge_len", proxy_replace_header_map_value(0, S("x-hostile-rep"), K, HUGE));
    CASE(proxy_replace_header_map_value, "bad_map", proxy_replace_header_map_value(99, S("x-hostile-rep"), S("v")));
    CASE(proxy_replace_header_map_value, "map_not_now", proxy_replace_header_map_value(2, S("x-hostile-rep"), S("v")));
    CASE(proxy_replace_header_map_value, "zero_value", proxy_replace_header_map_value(0, S("x-hostile-rep"), P(empty), 0));

    CASE(proxy_remove_header_map_value, "key_oob", proxy_remove_header_map_value(0, OOB, 4));
    CASE(proxy_remove_header_map_value, "key_oob_zero_len", proxy_remove_header_map_value(0, OOB, 0));
    CASE(proxy_remove_header_map_value, "key_huge_len", proxy_remove_header_map_value(0, K, HUGE));
    CASE(proxy_remove_header_map_value, "key_over_len", proxy_remove_header_map_value(0, K, over(K)));
    CASE(proxy_remove_header_map_value, "bad_map", proxy_remove_header_map_value(99, S("x-hostile-rep")));
    CASE(proxy_remove_header_map_value, "map_not_now", proxy_remove_header_map_value(2, S("x-hostile-rep")));
    CASE(proxy_remove_header_map_value, "missing", proxy_remove_header_map_value(0, S("x-nope")));
    CASE(proxy_remove_header_map_value, "zero_key", proxy_remove_header_map_value(0, P(empty), 0));

    CASE(proxy_get_header_map_pairs, "ok", proxy_get_header_map_pairs(0, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_pairs, "ptr_oob", proxy_get_header_map_pairs(0, OOB, P(&out_len)));
    CASE(proxy_get_header_map_pairs, "size_oob", proxy_get_header_map_pairs(0, P(&out_ptr), OOB));
    CASE(proxy_get_header_map_pairs, "bad_map", proxy_get_header_map_pairs(99, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_header_map_pairs, "map_not_now", proxy_get_header_map_pairs(2, P(&out_ptr), P(&out_len)));

    CASE(proxy_set_header_map_pairs, "oob", proxy_set_header_map_pairs(0, OOB, 16));
    CASE(proxy_set_header_map_pairs, "huge_len", proxy_set_header_map_pairs(0, P(call_headers), HUGE));
    CASE(proxy_set_header_map_pairs, "over_len", proxy_set_header_map_pairs(0, P(call_headers), over(P(call_headers))));
    CASE(proxy_set_header_map_pairs, "bad_map", proxy_set_header_map_pairs(99, P(call_headers), CALL_HEADERS_LEN));
    CASE(proxy_set_header_map_pairs, "map_not_now_zero_len", proxy_set_header_map_pairs(2, P(empty), 0));

    CASE(proxy_get_header_map_size, "ok", proxy_get_header_map_size(0, P(&out_u32)));
    CASE(proxy_get_header_map_size, "out_oob", proxy_get_header_map_size(0, OOB));
    CASE(proxy_get_header_map_size, "bad_map", proxy_get_header_map_size(99, P(&out_u32)));
    CASE(proxy_get_header_map_size, "map_not_now", proxy_get_header_map_size(2, P(&out_u32)));
}

static void buffers(void) {
    /* 0 = HTTP_REQUEST_BODY (a GET: no body yet), 7 = PLUGIN_CONFIGURATION (outside configure). */
    CASE(proxy_get_buffer_bytes, "request_body", proxy_get_buffer_bytes(0, 0, 1024, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_buffer_bytes, "request_body_huge_max", proxy_get_buffer_bytes(0, 0, HUGE, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_buffer_bytes, "request_body_out_oob", proxy_get_buffer_bytes(0, 0, 1024, OOB, OOB));
    CASE(proxy_get_buffer_bytes, "plugin_config", proxy_get_buffer_bytes(7, 0, 1024, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_buffer_bytes, "bad_type", proxy_get_buffer_bytes(99, 0, 1024, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_buffer_bytes, "zero_len", proxy_get_buffer_bytes(0, 0, 0, P(&out_ptr), P(&out_len)));

    CASE(proxy_set_buffer_bytes, "data_oob", proxy_set_buffer_bytes(0, 0, 0, OOB, 4));
    CASE(proxy_set_buffer_bytes, "data_huge_len", proxy_set_buffer_bytes(0, 0, 0, P(msg), HUGE));
    CASE(proxy_set_buffer_bytes, "data_over_len", proxy_set_buffer_bytes(0, 0, 0, P(msg), over(P(msg))));
    CASE(proxy_set_buffer_bytes, "bad_type", proxy_set_buffer_bytes(99, 0, 0, S("x")));
    CASE(proxy_set_buffer_bytes, "plugin_config", proxy_set_buffer_bytes(7, 0, 0, S("x")));
    CASE(proxy_set_buffer_bytes, "zero_len", proxy_set_buffer_bytes(0, 0, 0, P(empty), 0));

    CASE(proxy_get_buffer_status, "request_body", proxy_get_buffer_status(0, P(&out_len), P(&out_u32)));
    CASE(proxy_get_buffer_status, "len_oob", proxy_get_buffer_status(0, OOB, P(&out_u32)));
    CASE(proxy_get_buffer_status, "flags_oob", proxy_get_buffer_status(0, P(&out_len), OOB));
    CASE(proxy_get_buffer_status, "plugin_config", proxy_get_buffer_status(7, P(&out_len), P(&out_u32)));
    CASE(proxy_get_buffer_status, "bad_type", proxy_get_buffer_status(99, P(&out_len), P(&out_u32)));
}

static const char path[] = "request\0path";
#define PATH_LEN (sizeof(path) - 1)
static char vm_id[64];
static u32 vm_id_len;

static void properties(void) {
    CASE(proxy_get_property, "ok", proxy_get_property(P(path), PATH_LEN, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_property, "path_oob", proxy_get_property(OOB, 4, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_property, "path_huge_len", proxy_get_property(P(path), HUGE, P(&out_ptr), P(&out_len)));
    CASE(proxy_get_property, "path_over_len", proxy_get_property(P(path), over(P(path)), P(&out_ptr), P(&out_len)));
    CASE(proxy_get_property, "value_ptr_oob", proxy_get_property(P(path), PATH_LEN, OOB, P(&out_len)));
    CASE(proxy_get_property, "value_len_oob", proxy_get_property(P(path), PATH_LEN, P(&out_ptr), OOB));
    CASE(proxy_get_property, "unknown", proxy_get_property(S("nope"), P(&out_ptr), P(&out_len)));
    CASE(proxy_get_property, "zero_len", proxy_get_property(P(empty), 0, P(&out_ptr), P(&out_len)));

    CASE(proxy_set_property, "path_oob", proxy_set_property(OOB, 4, S("v")));
    CASE(proxy_set_property, "path_huge_len", proxy_set_property(P("hostile_prop"), HUGE, S("v")));
    CASE(proxy_set_property, "value_oob", proxy_set_property(S("hostile_prop"), OOB, 4));
    CASE(proxy_set_property, "value_huge_len", proxy_set_property(S("hostile_prop"), P(msg), HUGE));
    CASE(proxy_set_property, "zero_value", proxy_set_property(S("hostile_prop"), P(empty), 0));
    CASE(proxy_set_property, "zero_path", proxy_set_property(P(empty), 0, S("v")));

    /* This VM's id, to resolve its own queue below. */
    vm_id_len = 0;
    if (proxy_get_property(S("plugin_vm_id"), P(&out_ptr), P(&out_len)) == 0 && out_len < sizeof(vm_id)) {
        for (u32 i = 0; i < out_len; i++) vm_id[i] = ((const char *)(uintptr_t)out_ptr)[i];
        vm_id_len = out_len;
    }
}

static void shared_data(void) {
    const u32 K = P("hostile-key"), KL = 11;
    CASE(proxy_set_shared_data, "ok", proxy_set_shared_data(K, KL, S("v"), 0));
    CASE(proxy_set_shared_data, "key_oob", proxy_set_shared_data(OOB, 4, S("v"), 0));
    CASE(proxy_set_shared_data, "key_huge_len", proxy_set_shared_data(K, HUGE, S("v"), 0));
    CASE(proxy_set_shared_data, "value_oob", proxy_set_shared_data(K, KL, OOB, 4, 0));
    CASE(proxy_set_shared_data, "value_huge_len", proxy_set_shared_data(K, KL, P(msg), HUGE, 0));
    CASE(proxy_set_shared_data, "value_over_len", proxy_set_shared_data(K, KL, P(msg), over(P(msg)), 0));
    CASE(proxy_set_shared_data, "cas_mismatch", proxy_set_shared_data(K, KL, S("v"), 0x7FFFFFF0u));
    CASE(proxy_set_shared_data, "zero_value", proxy_set_shared_data(S("hostile-empty"), P(empty), 0, 0));
    CASE(proxy_set_shared_data, "zero_key", proxy_set_shared_data(P(empty), 0, S("v"), 0));

    CASE(proxy_get_shared_data, "ok", proxy_get_shared_data(K, KL, P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "missing", proxy_get_shared_data(S("hostile-missing"), P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "key_oob", proxy_get_shared_data(OOB, 4, P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "key_huge_len", proxy_get_shared_data(K, HUGE, P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "key_over_len", proxy_get_shared_data(K, over(K), P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "value_ptr_oob", proxy_get_shared_data(K, KL, OOB, P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "value_len_oob", proxy_get_shared_data(K, KL, P(&out_ptr), OOB, P(&out_cas)));
    CASE(proxy_get_shared_data, "cas_oob", proxy_get_shared_data(K, KL, P(&out_ptr), P(&out_len), OOB));
    CASE(proxy_get_shared_data, "empty_value", proxy_get_shared_data(S("hostile-empty"), P(&out_ptr), P(&out_len), P(&out_cas)));
    CASE(proxy_get_shared_data, "empty_value_out_oob", proxy_get_shared_data(S("hostile-empty"), OOB, OOB, P(&out_cas)));
}

static void queues(void) {
    u32 qid = 0;
    CASE(proxy_register_shared_queue, "ok", proxy_register_shared_queue(S("hostile-q"), P(&qid)));
    CASE(proxy_register_shared_queue, "name_oob", proxy_register_shared_queue(OOB, 4, P(&out_u32)));
    CASE(proxy_register_shared_queue, "name_huge_len", proxy_register_shared_queue(P(msg), HUGE, P(&out_u32)));
    CASE(proxy_register_shared_queue, "id_oob", proxy_register_shared_queue(S("hostile-q"), OOB));
    CASE(proxy_register_shared_queue, "zero_len", proxy_register_shared_queue(P(empty), 0, P(&out_u32)));

    CASE(proxy_resolve_shared_queue, "ok", proxy_resolve_shared_queue(P(vm_id), vm_id_len, S("hostile-q"), P(&out_u32)));
    CASE(proxy_resolve_shared_queue, "id_oob", proxy_resolve_shared_queue(P(vm_id), vm_id_len, S("hostile-q"), OOB));
    CASE(proxy_resolve_shared_queue, "missing", proxy_resolve_shared_queue(P(vm_id), vm_id_len, S("hostile-missing"), P(&out_u32)));
    CASE(proxy_resolve_shared_queue, "vm_oob", proxy_resolve_shared_queue(OOB, 4, S("hostile-q"), P(&out_u32)));
    CASE(proxy_resolve_shared_queue, "name_oob", proxy_resolve_shared_queue(P(vm_id), vm_id_len, OOB, 4, P(&out_u32)));
    CASE(proxy_resolve_shared_queue, "name_huge_len", proxy_resolve_shared_queue(P(vm_id), vm_id_len, P(msg), HUGE, P(&out_u32)));

    /* Balanced per request: two items in, two out (also when a dequeue's out-pointer fails). */
    CASE(proxy_enqueue_shared_queue, "unknown_id", proxy_enqueue_shared_queue(0x7FFFFFF0u, S("x")));
    CASE(proxy_enqueue_shared_queue, "value_oob", proxy_enqueue_shared_queue(qid, OOB, 4));
    CASE(proxy_enqueue_shared_queue, "value_huge_len", proxy_enqueue_shared_queue(qid, P(msg), HUGE));
    CASE(proxy_enqueue_shared_queue, "zero_len", proxy_enqueue_shared_queue(qid, P(empty), 0));
    CASE(proxy_dequeue_shared_queue, "out_oob", proxy_dequeue_shared_queue(qid, OOB, OOB));
    CASE(proxy_dequeue_shared_queue, "after_out_oob", proxy_dequeue_shared_queue(qid, P(&out_ptr), P(&out_len)));
    CASE(proxy_enqueue_shared_queue, "ok", proxy_enqueue_shared_queue(qid, S("x")));
    CASE(proxy_dequeue_shared_queue, "ok", proxy_dequeue_shared_queue(qid, P(&out_ptr), P(&out_len)));
    CASE(proxy_dequeue_shared_queue, "empty", proxy_dequeue_shared_queue(qid, P(&out_ptr), P(&out_len)));
    CASE(proxy_dequeue_shared_queue, "unknown_id", proxy_dequeue_shared_queue(0x7FFFFFF0u, P(&out_ptr), P(&out_len)));
}

static void metrics(void) {
    u32 counter = 0, gauge = 0;
    CASE(proxy_define_metric, "counter", proxy_define_metric(0, S("hostile_counter"), P(&counter)));
    CASE(proxy_define_metric, "gauge", proxy_define_metric(1, S("hostile_gauge"), P(&gauge)));
    CASE(proxy_define_metric, "name_oob", proxy_define_metric(0, OOB, 4, P(&out_u32)));
    CASE(proxy_define_metric, "name_huge_len", proxy_define_metric(0, P(msg), HUGE, P(&out_u32)));
    CASE(proxy_define_metric, "bad_type", proxy_define_metric(99, S("hostile_bad"), P(&out_u32)));
    CASE(proxy_define_metric, "id_oob", proxy_define_metric(0, S("hostile_counter"), OOB));
    CASE(proxy_define_metric, "zero_len", proxy_define_metric(0, P(empty), 0, P(&out_u32)));

    CASE(proxy_increment_metric, "ok", proxy_increment_metric(counter, 1));
    CASE(proxy_increment_metric, "counter_negative", proxy_increment_metric(counter, -1));
    CASE(proxy_increment_metric, "gauge_negative", proxy_increment_metric(gauge, -1));
    /* Envoy keeps the metric type in an id's low 2 bits: ...F0 is an unknown counter id, ...F3 an
     * id of no metric type at all. */
    CASE(proxy_increment_metric, "unknown_id", proxy_increment_metric(0x7FFFFFF0u, 1));
    CASE(proxy_increment_metric, "unknown_id_type3", proxy_increment_metric(0x7FFFFFF3u, 1));
    CASE(proxy_record_metric, "ok", proxy_record_metric(gauge, 7));
    CASE(proxy_record_metric, "unknown_id", proxy_record_metric(0x7FFFFFF0u, 7));
    CASE(proxy_record_metric, "unknown_id_type3", proxy_record_metric(0x7FFFFFF3u, 7));
    CASE(proxy_get_metric, "ok", proxy_get_metric(counter, P(&out_u64)));
    CASE(proxy_get_metric, "out_oob", proxy_get_metric(counter, OOB));
    CASE(proxy_get_metric, "out_edge", proxy_get_metric(counter, mem_size() - 4));
    CASE(proxy_get_metric, "unknown_id", proxy_get_metric(0x7FFFFFF0u, P(&out_u64)));
    CASE(proxy_get_metric, "unknown_id_type3", proxy_get_metric(0x7FFFFFF3u, P(&out_u64)));
}

static void calls(void) {
    /* Every call names the unknown cluster "nope": nothing can be sent anywhere. */
    const u32 U = P("nope"), UL = 4, H = P(call_headers), HL = CALL_HEADERS_LEN, T = P(&out_u32);
    CASE(proxy_http_call, "unknown_cluster", proxy_http_call(U, UL, H, HL, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "upstream_oob", proxy_http_call(OOB, 4, H, HL, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "upstream_huge_len", proxy_http_call(U, HUGE, H, HL, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "headers_oob", proxy_http_call(U, UL, OOB, HL, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "headers_over_len", proxy_http_call(U, UL, H, over(H), P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "body_oob", proxy_http_call(U, UL, H, HL, OOB, 4, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "body_huge_len", proxy_http_call(U, UL, H, HL, P(msg), HUGE, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "trailers_oob", proxy_http_call(U, UL, H, HL, P(empty), 0, OOB, 4, 1000, T));
    CASE(proxy_http_call, "token_oob", proxy_http_call(U, UL, H, HL, P(empty), 0, P(empty), 0, 1000, OOB));
    CASE(proxy_http_call, "zero_upstream", proxy_http_call(P(empty), 0, H, HL, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_http_call, "zero_headers", proxy_http_call(U, UL, P(empty), 0, P(empty), 0, P(empty), 0, 1000, T));

    const u32 SN = P("svc.S"), SNL = 5, M = P("M"), ML = 1;
    CASE(proxy_grpc_call, "service_oob", proxy_grpc_call(OOB, 4, SN, SNL, M, ML, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_grpc_call, "service_huge_len", proxy_grpc_call(U, HUGE, SN, SNL, M, ML, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_grpc_call, "service_name_oob", proxy_grpc_call(U, UL, OOB, 4, M, ML, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_grpc_call, "method_oob", proxy_grpc_call(U, UL, SN, SNL, OOB, 4, P(empty), 0, P(empty), 0, 1000, T));
    CASE(proxy_grpc_call, "metadata_oob", proxy_grpc_call(U, UL, SN, SNL, M, ML, OOB, 4, P(empty), 0, 1000, T));
    CASE(proxy_grpc_call, "request_oob", proxy_grpc_call(U, UL, SN, SNL, M, ML, P(empty), 0, OOB, 4, 1000, T));
    CASE(proxy_grpc_call, "request_over_len", proxy_grpc_call(U, UL, SN, SNL, M, ML, P(empty), 0, P(msg), over(P(msg)), 1000, T));
    CASE(proxy_grpc_stream, "service_oob", proxy_grpc_stream(OOB, 4, SN, SNL, M, ML, P(empty), 0, T));
    CASE(proxy_grpc_stream, "metadata_huge_len", proxy_grpc_stream(U, UL, SN, SNL, M, ML, P(msg), HUGE, T));
    CASE(proxy_grpc_send, "unknown_token", proxy_grpc_send(0x7FFFFFF0u, S("x"), 0));
    CASE(proxy_grpc_send, "message_oob", proxy_grpc_send(0x7FFFFFF0u, OOB, 4, 0));
    CASE(proxy_grpc_cancel, "unknown_token", proxy_grpc_cancel(0x7FFFFFF0u));
    CASE(proxy_grpc_close, "unknown_token", proxy_grpc_close(0x7FFFFFF0u));

    CASE(proxy_call_foreign_function, "unknown", proxy_call_foreign_function(S("nope"), S("a"), P(&out_ptr), P(&out_len)));
    CASE(proxy_call_foreign_function, "name_oob", proxy_call_foreign_function(OOB, 4, S("a"), P(&out_ptr), P(&out_len)));
    CASE(proxy_call_foreign_function, "name_huge_len", proxy_call_foreign_function(P(msg), HUGE, S("a"), P(&out_ptr), P(&out_len)));
    CASE(proxy_call_foreign_function, "args_oob", proxy_call_foreign_function(S("nope"), OOB, 4, P(&out_ptr), P(&out_len)));
    CASE(proxy_call_foreign_function, "args_huge_len", proxy_call_foreign_function(S("nope"), P(msg), HUGE, P(&out_ptr), P(&out_len)));
    CASE(proxy_call_foreign_function, "zero_name", proxy_call_foreign_function(P(empty), 0, P(empty), 0, P(&out_ptr), P(&out_len)));
}

static void streams_and_context(void) {
    CASE(proxy_set_effective_context, "unknown_id", proxy_set_effective_context(0x7FFFFFF0u));
    CASE(proxy_get_status, "ok", proxy_get_status(P(&out_u32), P(&out_ptr), P(&out_len)));
    CASE(proxy_get_status, "code_oob", proxy_get_status(OOB, P(&out_ptr), P(&out_len)));
    CASE(proxy_continue_stream, "bad_type", proxy_continue_stream(99));
    CASE(proxy_continue_stream, "type_4", proxy_continue_stream(4));
    CASE(proxy_continue_stream, "downstream", proxy_continue_stream(2));
    CASE(proxy_continue_stream, "upstream", proxy_continue_stream(3));
    CASE(proxy_close_stream, "bad_type", proxy_close_stream(99));
    CASE(proxy_close_stream, "type_4", proxy_close_stream(4));
    /* Bounds failures only: a successful local reply would replace the report. */
    CASE(proxy_send_local_response, "details_oob", proxy_send_local_response(500, OOB, 4, S("no"), P(empty), 0, -1));
    CASE(proxy_send_local_response, "body_oob", proxy_send_local_response(500, P(empty), 0, OOB, 4, P(empty), 0, -1));
    CASE(proxy_send_local_response, "body_huge_len", proxy_send_local_response(500, P(empty), 0, P(msg), HUGE, P(empty), 0, -1));
    CASE(proxy_send_local_response, "headers_oob", proxy_send_local_response(500, P(empty), 0, S("no"), OOB, 8, -1));
}

EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}
EXPORT(_initialize) void _initialize(void) {}
EXPORT(proxy_on_context_create) void proxy_on_context_create(u32 context_id, u32 parent_id) {
    (void)context_id;
    (void)parent_id;
}
EXPORT(proxy_on_vm_start) i32 proxy_on_vm_start(u32 root_id, u32 size) {
    (void)root_id;
    (void)size;
    return 1;
}
EXPORT(proxy_on_configure) i32 proxy_on_configure(u32 root_id, u32 size) {
    (void)root_id;
    (void)size;
    return 1;
}

EXPORT(proxy_on_request_headers) i32 proxy_on_request_headers(u32 context_id, u32 num_headers, u32 end_of_stream) {
    (void)context_id;
    (void)num_headers;
    (void)end_of_stream;
    arena_used = 0;
    report_len = 0;
    logging();
    header_maps();
    buffers();
    properties();
    shared_data();
    queues();
    metrics();
    calls();
    streams_and_context();
    i32 st = proxy_send_local_response(200, P(empty), 0, P(report), report_len, P(empty), 0, -1);
    if (st != 0) {
        /* Cannot report: say so in the log (the client then sees whatever the host does next). */
        proxy_log(4, S("c-hostile-args: the final local reply failed"));
    }
    return 1; /* PAUSE: the local reply answers the request */
}
