/* c-fuzz-hostcalls: the hostcall fuzzer's harness guest (fuzz/fuzz_targets/hostcalls.rs). A proxy-wasm
 * ABI 0.2.1 guest that, in proxy_on_request_headers, reads a byte script from the request header
 * `x-fuzz-script` and replays it: every callback of the stream (request headers first, then body,
 * trailers, response callbacks, HTTP call and gRPC answers, done/log/delete) runs the script's next
 * segment, a sequence of hostcalls with fuzzer-chosen arguments, ended by the value the callback
 * returns.
 *
 * The guest itself never traps, whatever the script, so the fuzz target can hold the host to its
 * rule that a guest's mistake is a status code, never a trap: the guest's own data (the script, the
 * allocator's state, the stack) lies below __heap_base, and no out-pointer the script passes points
 * there (one that would is moved up by __heap_base); its allocator never returns NULL and never
 * grows memory. It traps deliberately (`unreachable`) only when the host breaks a promise it can
 * check: a call that answered OK handed back a buffer outside memory, or a serialized header map
 * that does not parse.
 *
 * Memory above __heap_base: 64 u32 slots (out-values the script can name and reuse), a ring arena
 * for the host's allocations, then the data area the script writes bytes into. Memory has a fixed
 * size (initial = maximum, see build.sh).
 *
 * Script format (every number little-endian; a script that ends early ends its segment):
 *   op % 8 == 0  END v        return v % 3 (v < 200), else the next u32 raw
 *           1   WRITE off:u16 n:u8 bytes[n]   copy into data + off (clipped to memory)
 *           2   CALL f:u8 args...             hostcall calls[f % NCALLS], each argument an ARG below
 *           3   WORD off:u16 w:u8             copy words[w % NWORDS] into data + off
 *           4   MAP off:u16 n:u8 (kl:u8 vl:u8 k v)*n   a serialized header map at data + off
 *           5   LEN n:u16                     the length argument kind 6 answers
 *           6,7 CALL, as 2 (calls are most of what a script does)
 *   ARG tag % 8: 0 u8 · 1 raw u32 · 2 data + u16 · 3 slot u8 · 4 memory end + u16 (out of bounds)
 *                5 memory end - u8 (straddling the end) · 6 the LEN value · 7 the u32 in slot u8
 *   An i64 parameter is always 8 raw bytes. */
#include <stddef.h>
#include <stdint.h>

#define IMPORT(module, name) __attribute__((import_module(module), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

/* ---- the host functions: every row of thaw's table but proc_exit (it traps, by design) ---- */
IMPORT("env", proxy_log) i32 h_log(u32, u32, u32);
IMPORT("env", proxy_get_log_level) i32 h_get_log_level(u32);
IMPORT("env", proxy_get_current_time_nanoseconds) i32 h_get_time(u32);
IMPORT("env", proxy_set_effective_context) i32 h_set_effective_context(u32);
IMPORT("env", proxy_get_buffer_bytes) i32 h_get_buffer_bytes(u32, u32, u32, u32, u32);
IMPORT("env", proxy_get_buffer_status) i32 h_get_buffer_status(u32, u32, u32);
IMPORT("env", proxy_get_header_map_size) i32 h_get_header_map_size(u32, u32);
IMPORT("env", proxy_get_header_map_pairs) i32 h_get_header_map_pairs(u32, u32, u32);
IMPORT("env", proxy_set_header_map_pairs) i32 h_set_header_map_pairs(u32, u32, u32);
IMPORT("env", proxy_get_header_map_value) i32 h_get_header_map_value(u32, u32, u32, u32, u32);
IMPORT("env", proxy_add_header_map_value) i32 h_add_header_map_value(u32, u32, u32, u32, u32);
IMPORT("env", proxy_replace_header_map_value) i32 h_replace_header_map_value(u32, u32, u32, u32, u32);
IMPORT("env", proxy_remove_header_map_value) i32 h_remove_header_map_value(u32, u32, u32);
IMPORT("env", proxy_send_local_response) i32 h_send_local_response(u32, u32, u32, u32, u32, u32, u32, u32);
IMPORT("env", proxy_set_tick_period_milliseconds) i32 h_set_tick_period(u32);
IMPORT("env", proxy_define_metric) i32 h_define_metric(u32, u32, u32, u32);
IMPORT("env", proxy_increment_metric) i32 h_increment_metric(u32, i64);
IMPORT("env", proxy_record_metric) i32 h_record_metric(u32, i64);
IMPORT("env", proxy_get_metric) i32 h_get_metric(u32, u32);
IMPORT("env", proxy_set_buffer_bytes) i32 h_set_buffer_bytes(u32, u32, u32, u32, u32);
IMPORT("env", proxy_continue_stream) i32 h_continue_stream(u32);
IMPORT("env", proxy_close_stream) i32 h_close_stream(u32);
IMPORT("env", proxy_get_status) i32 h_get_status(u32, u32, u32);
IMPORT("env", proxy_done) i32 h_done(void);
IMPORT("env", pthread_equal) i32 h_pthread_equal(u32, u32);
IMPORT("env", emscripten_notify_memory_growth) void h_notify_memory_growth(u32);
IMPORT("env", proxy_get_configuration) i32 h_get_configuration(u32, u32);
IMPORT("env", proxy_continue_request) i32 h_continue_request(void);
IMPORT("env", proxy_continue_response) i32 h_continue_response(void);
IMPORT("env", proxy_clear_route_cache) i32 h_clear_route_cache(void);
IMPORT("env", proxy_http_call) i32 h_http_call(u32, u32, u32, u32, u32, u32, u32, u32, u32, u32);
IMPORT("env", proxy_grpc_call) i32 h_grpc_call(u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32);
IMPORT("env", proxy_grpc_stream) i32 h_grpc_stream(u32, u32, u32, u32, u32, u32, u32, u32, u32);
IMPORT("env", proxy_grpc_send) i32 h_grpc_send(u32, u32, u32, u32);
IMPORT("env", proxy_grpc_close) i32 h_grpc_close(u32);
IMPORT("env", proxy_grpc_cancel) i32 h_grpc_cancel(u32);
IMPORT("env", proxy_get_property) i32 h_get_property(u32, u32, u32, u32);
IMPORT("env", proxy_set_property) i32 h_set_property(u32, u32, u32, u32);
IMPORT("env", proxy_get_shared_data) i32 h_get_shared_data(u32, u32, u32, u32, u32);
IMPORT("env", proxy_set_shared_data) i32 h_set_shared_data(u32, u32, u32, u32, u32);
IMPORT("env", proxy_register_shared_queue) i32 h_register_shared_queue(u32, u32, u32);
IMPORT("env", proxy_resolve_shared_queue) i32 h_resolve_shared_queue(u32, u32, u32, u32, u32);
IMPORT("env", proxy_enqueue_shared_queue) i32 h_enqueue_shared_queue(u32, u32, u32);
IMPORT("env", proxy_dequeue_shared_queue) i32 h_dequeue_shared_queue(u32, u32, u32);
IMPORT("env", proxy_call_foreign_function) i32 h_call_foreign_function(u32, u32, u32, u32, u32, u32);
/* Not in thaw's table: answered by the UNIMPLEMENTED / ENOSYS stubs. */
IMPORT("env", proxy_fuzz_not_a_hostcall) i32 h_unknown_env(u32, u32);
IMPORT("wasi_snapshot_preview1", sock_accept) i32 h_unknown_wasi(u32, u32, u32);
IMPORT("wasi_snapshot_preview1", fd_write) i32 w_fd_write(u32, u32, u32, u32);
IMPORT("wasi_snapshot_preview1", fd_read) i32 w_fd_read(u32, u32, u32, u32);
IMPORT("wasi_snapshot_preview1", fd_seek) i32 w_fd_seek(u32, i64, u32, u32);
IMPORT("wasi_snapshot_preview1", fd_close) i32 w_fd_close(u32);
IMPORT("wasi_snapshot_preview1", fd_fdstat_get) i32 w_fd_fdstat_get(u32, u32);
IMPORT("wasi_snapshot_preview1", fd_prestat_get) i32 w_fd_prestat_get(u32, u32);
IMPORT("wasi_snapshot_preview1", fd_prestat_dir_name) i32 w_fd_prestat_dir_name(u32, u32, u32);
IMPORT("wasi_snapshot_preview1", path_open) i32 w_path_open(u32, u32, u32, u32, u32, i64, i64, u32, u32);
IMPORT("wasi_unstable", clock_time_get) i32 w_clock_time_get(u32, i64, u32);
IMPORT("wasi_snapshot_preview1", random_get) i32 w_random_get(u32, u32);
IMPORT("wasi_snapshot_preview1", environ_sizes_get) i32 w_environ_sizes_get(u32, u32);
IMPORT("wasi_snapshot_preview1", environ_get) i32 w_environ_get(u32, u32);
IMPORT("wasi_snapshot_preview1", args_sizes_get) i32 w_args_sizes_get(u32, u32);
IMPORT("wasi_snapshot_preview1", args_get) i32 w_args_get(u32, u32);

/* For every call: how many u32 arguments, which of them are out-pointers (bit i: argument i; never
 * below __heap_base), and whether an i64 goes at position `wide` (-1: none; it is not counted in
 * `args`). `pair`: the (ptr_out, len_out) argument positions of a call that hands back a buffer
 * (-1: none); `map`: the buffer is a serialized header map. */
struct call {
    unsigned short out;
    unsigned char args, pair_ptr, pair_len, map;
    signed char wide, wide2;
};
#define NONE 0xff
enum { NCALLS = 60 };
static const struct call calls[NCALLS] = {
    /*  0 log */ {0, 3, NONE, NONE, 0, -1, -1},
    /*  1 get_log_level */ {1 << 0, 1, NONE, NONE, 0, -1, -1},
    /*  2 get_time */ {1 << 0, 1, NONE, NONE, 0, -1, -1},
    /*  3 set_effective_context */ {0, 1, NONE, NONE, 0, -1, -1},
    /*  4 get_buffer_bytes */ {1 << 3 | 1 << 4, 5, 3, 4, 0, -1, -1},
    /*  5 get_buffer_status */ {1 << 1 | 1 << 2, 3, NONE, NONE, 0, -1, -1},
    /*  6 get_header_map_size */ {1 << 1, 2, NONE, NONE, 0, -1, -1},
    /*  7 get_header_map_pairs */ {1 << 1 | 1 << 2, 3, 1, 2, 1, -1, -1},
    /*  8 set_header_map_pairs */ {0, 3, NONE, NONE, 0, -1, -1},
    /*  9 get_header_map_value */ {1 << 3 | 1 << 4, 5, 3, 4, 0, -1, -1},
    /* 10 add_header_map_value */ {0, 5, NONE, NONE, 0, -1, -1},
    /* 11 replace_header_map_value */ {0, 5, NONE, NONE, 0, -1, -1},
    /* 12 remove_header_map_value */ {0, 3, NONE, NONE, 0, -1, -1},
    /* 13 send_local_response */ {0, 8, NONE, NONE, 0, -1, -1},
    /* 14 set_tick_period */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 15 define_metric */ {1 << 3, 4, NONE, NONE, 0, -1, -1},
    /* 16 increment_metric */ {0, 1, NONE, NONE, 0, 1, -1},
    /* 17 record_metric */ {0, 1, NONE, NONE, 0, 1, -1},
    /* 18 get_metric */ {1 << 1, 2, NONE, NONE, 0, -1, -1},
    /* 19 set_buffer_bytes */ {0, 5, NONE, NONE, 0, -1, -1},
    /* 20 continue_stream */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 21 close_stream */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 22 get_status */ {1 << 0 | 1 << 1 | 1 << 2, 3, 1, 2, 0, -1, -1},
    /* 23 done */ {0, 0, NONE, NONE, 0, -1, -1},
    /* 24 pthread_equal */ {0, 2, NONE, NONE, 0, -1, -1},
    /* 25 notify_memory_growth */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 26 get_configuration */ {1 << 0 | 1 << 1, 2, 0, 1, 0, -1, -1},
    /* 27 continue_request */ {0, 0, NONE, NONE, 0, -1, -1},
    /* 28 continue_response */ {0, 0, NONE, NONE, 0, -1, -1},
    /* 29 clear_route_cache */ {0, 0, NONE, NONE, 0, -1, -1},
    /* 30 http_call */ {1 << 9, 10, NONE, NONE, 0, -1, -1},
    /* 31 grpc_call */ {1 << 11, 12, NONE, NONE, 0, -1, -1},
    /* 32 grpc_stream */ {1 << 8, 9, NONE, NONE, 0, -1, -1},
    /* 33 grpc_send */ {0, 4, NONE, NONE, 0, -1, -1},
    /* 34 grpc_close */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 35 grpc_cancel */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 36 get_property */ {1 << 2 | 1 << 3, 4, 2, 3, 0, -1, -1},
    /* 37 set_property */ {0, 4, NONE, NONE, 0, -1, -1},
    /* 38 get_shared_data */ {1 << 2 | 1 << 3 | 1 << 4, 5, 2, 3, 0, -1, -1},
    /* 39 set_shared_data */ {0, 5, NONE, NONE, 0, -1, -1},
    /* 40 register_shared_queue */ {1 << 2, 3, NONE, NONE, 0, -1, -1},
    /* 41 resolve_shared_queue */ {1 << 4, 5, NONE, NONE, 0, -1, -1},
    /* 42 enqueue_shared_queue */ {0, 3, NONE, NONE, 0, -1, -1},
    /* 43 dequeue_shared_queue */ {1 << 1 | 1 << 2, 3, 1, 2, 0, -1, -1},
    /* 44 call_foreign_function */ {1 << 4 | 1 << 5, 6, NONE, NONE, 0, -1, -1},
    /* 45 unknown env import */ {0, 2, NONE, NONE, 0, -1, -1},
    /* 46 unknown WASI import */ {0, 3, NONE, NONE, 0, -1, -1},
    /* 47 fd_write */ {1 << 3, 4, NONE, NONE, 0, -1, -1},
    /* 48 fd_read */ {1 << 3, 4, NONE, NONE, 0, -1, -1},
    /* 49 fd_seek */ {1 << 2, 3, NONE, NONE, 0, 1, -1},
    /* 50 fd_close */ {0, 1, NONE, NONE, 0, -1, -1},
    /* 51 fd_fdstat_get */ {1 << 1, 2, NONE, NONE, 0, -1, -1},
    /* 52 fd_prestat_get */ {1 << 1, 2, NONE, NONE, 0, -1, -1},
    /* 53 fd_prestat_dir_name */ {1 << 1, 3, NONE, NONE, 0, -1, -1},
    /* 54 path_open */ {1 << 6, 7, NONE, NONE, 0, 5, 6},
    /* 55 clock_time_get */ {1 << 1, 2, NONE, NONE, 0, 1, -1},
    /* 56 random_get */ {1 << 0, 2, NONE, NONE, 0, -1, -1},
    /* 57 environ_sizes_get */ {1 << 0 | 1 << 1, 2, NONE, NONE, 0, -1, -1},
    /* 58 environ_get / args_get */ {1 << 0 | 1 << 1, 2, NONE, NONE, 0, -1, -1},
    /* 59 args_sizes_get */ {1 << 0 | 1 << 1, 2, NONE, NONE, 0, -1, -1},
};

/* Words the script can place (property paths are NUL-separated segments). */
#define W(s) {s, sizeof(s) - 1}
static const struct {
    const char *s;
    u32 n;
} words[] = {
    W(":path"), W(":method"), W(":authority"), W(":status"), W("x-fuzz-script"), W("content-type"),
    W("application/grpc"), W("grpc-status"), W("x-tenant"), W("cluster"), W("fuzz.Service"), W("Method"),
    W("request\0path"), W("request\0headers\0x-tenant"), W("source\0address"), W("destination\0port"),
    W("plugin_name"), W("plugin_root_id"), W("node\0id"), W("metadata\0filter_metadata"), W("response\0code"),
    W("connection\0mtls"), W("upstream\0address"), W("xds\0route_name"), W("filter_state\0k"), W("key"),
    W("queue"), W("fuzz"), W("check"), W(""), W("\0"), W("GET"),
};
enum { NWORDS = sizeof(words) / sizeof(words[0]) };

/* ---- the guest's own state: all below __heap_base ---- */
extern unsigned char __heap_base;
enum { MAX_SCRIPT = 64 * 1024, SLOTS = 64, ARENA = 96 * 1024 };
static unsigned char script[MAX_SCRIPT];
static u32 script_len, pc, arena_next, len_value;

static u32 heap(void) { return (u32)(uintptr_t)&__heap_base; }
static u32 mem_end(void) { return (u32)__builtin_wasm_memory_size(0) * 65536u; }
static u32 slot_base(void) { return (heap() + 7) & ~7u; }
static u32 arena_base(void) { return slot_base() + SLOTS * 4; }
static u32 data_base(void) { return arena_base() + ARENA; }

static void copy(u32 to, const unsigned char *from, u32 n) {
    unsigned char *p = (unsigned char *)(uintptr_t)to;
    for (u32 i = 0; i < n; i++) p[i] = from[i];
}

/* The host's allocations: a ring in the arena. Never NULL; a request larger than the arena gets
 * the data area, and the host's copy is then bounds-checked like any other write. */
EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(u32 size) {
    if (size > ARENA) return (void *)(uintptr_t)data_base();
    u32 start = (arena_next + 7) & ~7u;
    if (start > ARENA || size > ARENA - start) start = 0;
    arena_next = start + size;
    return (void *)(uintptr_t)(arena_base() + start);
}

/* ---- reading the script ---- */
static int more(u32 n) { return pc <= script_len && n <= script_len - pc; }
static u32 u8(void) { return more(1) ? script[pc++] : 0; }
static u32 u16(void) { u32 lo = u8(); return lo | u8() << 8; }
static u32 u32v(void) { u32 lo = u16(); return lo | u16() << 16; }
static i64 i64v(void) { u64 lo = u32v(); return (i64)(lo | (u64)u32v() << 32); }

static u32 clip_data(u32 off, u32 *n) {
    u32 to = data_base() + off, end = mem_end();
    if (to >= end) { *n = 0; return end; }
    if (*n > end - to) *n = end - to;
    return to;
}

static u32 sat_add(u32 a, u32 b) { return a + b < a ? 0xffffffffu : a + b; }

static u32 arg(void) {
    u32 tag = u8() % 8;
    switch (tag) {
    case 0: return u8();
    case 1: return u32v();
    case 2: return sat_add(data_base(), u16());
    case 3: return slot_base() + 4 * (u8() % SLOTS);
    case 4: return sat_add(mem_end(), u16());
    case 5: return mem_end() - (u8() % 64);
    case 6: return len_value;
    default: return *(u32 *)(uintptr_t)(slot_base() + 4 * (u8() % SLOTS));
    }
}

/* ---- what the guest checks of the host ---- */
static u32 load(u32 at) { return *(u32 *)(uintptr_t)at; }

static int is_slot(u32 p) { return p >= slot_base() && p < arena_base() && (p - slot_base()) % 4 == 0; }

/* A buffer handed back must lie inside memory; a header map must parse exactly. */
static void check_buffer(u32 ptr, u32 len, int map) {
    if (len == 0) return;
    if (ptr == 0 || ptr > mem_end() || len > mem_end() - ptr) __builtin_trap();
    if (!map) return;
    const unsigned char *m = (const unsigned char *)(uintptr_t)ptr;
    if (len < 4) __builtin_trap();
    u32 count = load(ptr);
    if (count > (len - 4) / 8) __builtin_trap();
    u32 at = 4 + 8 * count;
    for (u32 i = 0; i < count; i++) {
        u32 kl = load(ptr + 4 + 8 * i), vl = load(ptr + 8 + 8 * i);
        for (u32 part = 0; part < 2; part++) {
            u32 n = part ? vl : kl;
            if (n > len - at || len - at - n < 1 || m[at + n] != 0) __builtin_trap();
            at += n + 1;
        }
    }
    if (at != len) __builtin_trap();
}

/* The arguments of the call running (what call_and_check looks at afterwards). */
static u32 a[12];

static i32 call(u32 f) {
    const struct call *c = &calls[f];
    i64 w = 0, w2 = 0;
    for (u32 k = 0; k < 12; k++) a[k] = 0;
    for (u32 k = 0; k < c->args; k++) {
        if (c->wide == (signed char)k) w = i64v();
        if (c->wide2 == (signed char)k) w2 = i64v();
        a[k] = arg();
        if ((c->out >> k & 1) && a[k] < heap()) a[k] += heap();
    }
    if (c->wide == (signed char)c->args) w = i64v();
    switch (f) {
    case 0: return h_log(a[0], a[1], a[2]);
    case 1: return h_get_log_level(a[0]);
    case 2: return h_get_time(a[0]);
    case 3: return h_set_effective_context(a[0]);
    case 4: return h_get_buffer_bytes(a[0], a[1], a[2], a[3], a[4]);
    case 5: return h_get_buffer_status(a[0], a[1], a[2]);
    case 6: return h_get_header_map_size(a[0], a[1]);
    case 7: return h_get_header_map_pairs(a[0], a[1], a[2]);
    case 8: return h_set_header_map_pairs(a[0], a[1], a[2]);
    case 9: return h_get_header_map_value(a[0], a[1], a[2], a[3], a[4]);
    case 10: return h_add_header_map_value(a[0], a[1], a[2], a[3], a[4]);
    case 11: return h_replace_header_map_value(a[0], a[1], a[2], a[3], a[4]);
    case 12: return h_remove_header_map_value(a[0], a[1], a[2]);
    case 13: return h_send_local_response(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    case 14: return h_set_tick_period(a[0]);
    case 15: return h_define_metric(a[0], a[1], a[2], a[3]);
    case 16: return h_increment_metric(a[0], w);
    case 17: return h_record_metric(a[0], w);
    case 18: return h_get_metric(a[0], a[1]);
    case 19: return h_set_buffer_bytes(a[0], a[1], a[2], a[3], a[4]);
    case 20: return h_continue_stream(a[0]);
    case 21: return h_close_stream(a[0]);
    case 22: return h_get_status(a[0], a[1], a[2]);
    case 23: return h_done();
    case 24: return h_pthread_equal(a[0], a[1]);
    case 25: h_notify_memory_growth(a[0]); return 0;
    case 26: return h_get_configuration(a[0], a[1]);
    case 27: return h_continue_request();
    case 28: return h_continue_response();
    case 29: return h_clear_route_cache();
    case 30: return h_http_call(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
    case 31: return h_grpc_call(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
    case 32: return h_grpc_stream(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    case 33: return h_grpc_send(a[0], a[1], a[2], a[3]);
    case 34: return h_grpc_close(a[0]);
    case 35: return h_grpc_cancel(a[0]);
    case 36: return h_get_property(a[0], a[1], a[2], a[3]);
    case 37: return h_set_property(a[0], a[1], a[2], a[3]);
    case 38: return h_get_shared_data(a[0], a[1], a[2], a[3], a[4]);
    case 39: return h_set_shared_data(a[0], a[1], a[2], a[3], a[4]);
    case 40: return h_register_shared_queue(a[0], a[1], a[2]);
    case 41: return h_resolve_shared_queue(a[0], a[1], a[2], a[3], a[4]);
    case 42: return h_enqueue_shared_queue(a[0], a[1], a[2]);
    case 43: return h_dequeue_shared_queue(a[0], a[1], a[2]);
    case 44: return h_call_foreign_function(a[0], a[1], a[2], a[3], a[4], a[5]);
    case 45: return h_unknown_env(a[0], a[1]);
    case 46: return h_unknown_wasi(a[0], a[1], a[2]);
    case 47: return w_fd_write(a[0], a[1], a[2], a[3]);
    case 48: return w_fd_read(a[0], a[1], a[2], a[3]);
    case 49: return w_fd_seek(a[0], w, a[1], a[2]);
    case 50: return w_fd_close(a[0]);
    case 51: return w_fd_fdstat_get(a[0], a[1]);
    case 52: return w_fd_prestat_get(a[0], a[1]);
    case 53: return w_fd_prestat_dir_name(a[0], a[1], a[2]);
    case 54: return w_path_open(a[0], a[1], a[2], a[3], a[4], w, w2, a[5], a[6]);
    case 55: return w_clock_time_get(a[0], w, a[1]);
    case 56: return w_random_get(a[0], a[1]);
    case 57: return w_environ_sizes_get(a[0], a[1]);
    case 58: return (a[0] & 1) ? w_args_get(a[0], a[1]) : w_environ_get(a[0], a[1]);
    default: return w_args_sizes_get(a[0], a[1]);
    }
}

/* Runs one call and checks what it handed back. */
static void call_and_check(u32 f) {
    const struct call *c = &calls[f];
    i32 status = call(f);
    if (status != 0 || c->pair_ptr == NONE) return;
    u32 p = a[c->pair_ptr], l = a[c->pair_len];
    /* Only two distinct slots no other out-argument of the call names hold what the host wrote. */
    int distinct = is_slot(p) && is_slot(l) && p != l;
    for (u32 k = 0; k < c->args; k++)
        if (k != c->pair_ptr && k != c->pair_len && (c->out >> k & 1) && (a[k] + 4 > p && a[k] < p + 4)) distinct = 0;
    for (u32 k = 0; k < c->args; k++)
        if (k != c->pair_ptr && k != c->pair_len && (c->out >> k & 1) && (a[k] + 4 > l && a[k] < l + 4)) distinct = 0;
    if (distinct) check_buffer(load(p), load(l), c->map);
}

/* Runs the next segment; returns its END value. */
static u32 segment(void) {
    while (more(1)) {
        u32 op = u8() % 8;
        switch (op) {
        case 0: {
            u32 v = u8();
            return v < 200 ? v % 3 : u32v();
        }
        case 1: {
            u32 off = u16(), n = u8();
            if (!more(n)) n = script_len - pc;
            u32 take = n, to = clip_data(off, &n);
            copy(to, script + pc, n);
            pc += take;
            len_value = take;
            break;
        }
        case 3: {
            u32 off = u16(), w = u8() % NWORDS, n = words[w].n;
            copy(clip_data(off, &n), (const unsigned char *)words[w].s, n);
            len_value = words[w].n;
            break;
        }
        case 4: {
            /* count, (kl, vl) per pair, then each key and value with its NUL */
            unsigned char map[4 + 8 * 16 + 2 * 16 * 256];
            u32 count = u8() % 17, kl[16], vl[16], at = 4 + 8 * count;
            u32 off = u16();
            for (u32 i = 0; i < count; i++) { kl[i] = u8(); vl[i] = u8(); }
            map[0] = (unsigned char)count; map[1] = map[2] = map[3] = 0;
            for (u32 i = 0; i < count; i++) {
                for (u32 b = 0; b < 4; b++) {
                    map[4 + 8 * i + b] = (unsigned char)(kl[i] >> 8 * b);
                    map[8 + 8 * i + b] = (unsigned char)(vl[i] >> 8 * b);
                }
                for (u32 part = 0; part < 2; part++) {
                    u32 n = part ? vl[i] : kl[i];
                    for (u32 b = 0; b < n; b++) map[at++] = (unsigned char)u8();
                    map[at++] = 0;
                }
            }
            u32 n = at;
            copy(clip_data(off, &n), map, n);
            len_value = at;
            break;
        }
        case 5: len_value = u16(); break;
        default: call_and_check(u8() % NCALLS); break;
        }
    }
    return 0;
}

/* ---- the proxy-wasm exports ---- */
EXPORT(_initialize) void _initialize(void) {}
EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}
EXPORT(proxy_on_context_create) void proxy_on_context_create(u32 context, u32 parent) { (void)context; (void)parent; }
EXPORT(proxy_on_vm_start) u32 proxy_on_vm_start(u32 root, u32 size) { (void)root; (void)size; return 1; }
EXPORT(proxy_on_configure) u32 proxy_on_configure(u32 root, u32 size) { (void)root; (void)size; return 1; }

EXPORT(proxy_on_request_headers) u32 proxy_on_request_headers(u32 context, u32 headers, u32 end_of_stream) {
    (void)context; (void)headers; (void)end_of_stream;
    static const char key[] = "x-fuzz-script";
    u32 *out = (u32 *)(uintptr_t)slot_base();
    script_len = pc = 0;
    len_value = 0;
    if (h_get_header_map_value(0, (u32)(uintptr_t)key, sizeof(key) - 1, (u32)(uintptr_t)&out[0], (u32)(uintptr_t)&out[1]) == 0) {
        u32 ptr = out[0], len = out[1];
        check_buffer(ptr, len, 0);
        script_len = len < MAX_SCRIPT ? len : MAX_SCRIPT;
        copy((u32)(uintptr_t)script, (const unsigned char *)(uintptr_t)ptr, script_len);
    }
    return segment();
}
EXPORT(proxy_on_request_body) u32 proxy_on_request_body(u32 c, u32 s, u32 e) { (void)c; (void)s; (void)e; return segment(); }
EXPORT(proxy_on_request_trailers) u32 proxy_on_request_trailers(u32 c, u32 n) { (void)c; (void)n; return segment(); }
EXPORT(proxy_on_response_headers) u32 proxy_on_response_headers(u32 c, u32 n, u32 e) { (void)c; (void)n; (void)e; return segment(); }
EXPORT(proxy_on_response_body) u32 proxy_on_response_body(u32 c, u32 s, u32 e) { (void)c; (void)s; (void)e; return segment(); }
EXPORT(proxy_on_response_trailers) u32 proxy_on_response_trailers(u32 c, u32 n) { (void)c; (void)n; return segment(); }
EXPORT(proxy_on_http_call_response) void proxy_on_http_call_response(u32 c, u32 t, u32 h, u32 b, u32 tr) {
    (void)c; (void)t; (void)h; (void)b; (void)tr; segment();
}
EXPORT(proxy_on_grpc_receive_initial_metadata) void proxy_on_grpc_receive_initial_metadata(u32 c, u32 t, u32 n) {
    (void)c; (void)t; (void)n; segment();
}
EXPORT(proxy_on_grpc_receive) void proxy_on_grpc_receive(u32 c, u32 t, u32 s) { (void)c; (void)t; (void)s; segment(); }
EXPORT(proxy_on_grpc_receive_trailing_metadata) void proxy_on_grpc_receive_trailing_metadata(u32 c, u32 t, u32 n) {
    (void)c; (void)t; (void)n; segment();
}
EXPORT(proxy_on_grpc_close) void proxy_on_grpc_close(u32 c, u32 t, u32 s) { (void)c; (void)t; (void)s; segment(); }
EXPORT(proxy_on_done) u32 proxy_on_done(u32 c) { (void)c; segment(); return 1; }
EXPORT(proxy_on_log) void proxy_on_log(u32 c) { (void)c; segment(); }
EXPORT(proxy_on_delete) void proxy_on_delete(u32 c) { (void)c; segment(); }
