//! The host functions a proxy-wasm guest imports (module `env`) and the WASI preview 1 functions a
//! wasm32-wasip1 guest imports (`wasi_snapshot_preview1`, or `wasi_unstable`), as one table
//! ([`host_functions`]): a row per function with its Wasm signature, its implementation and its
//! [`Snapshot`] policy (whether a snapshotted init may call it). The linker registration
//! ([`linker`]), what a snapshotted init may call, and the CONFORMANCE.md check
//! (`tests/conformance_doc.rs`) are all derived from it.
//!
//! Every hostcall reads the same way: decode guest integers into enums (unknown -> BAD_ARGUMENT),
//! read guest memory through `memory` (bad pointer -> INVALID_MEMORY_ACCESS), delegate, encode the
//! result. A guest mistake is a status code; only a failure of the guest itself (its allocator
//! trapping, `proc_exit`) traps. Imports thaw does not implement get a stub that answers
//! UNIMPLEMENTED (`env`) or ENOSYS (WASI) and logs once per tenant and name.

use super::abi::{self, errno, BufferType, MapType, Status};
use super::header_map;
use super::host::{CallKind, Effect, HostState};
use super::instance::SnapshotInit;
use super::memory::{self, HostError, HostResult};
use super::{properties, shared};
use crate::log_at;
use crate::stream::{Direction, HeaderKind, LocalReply};
use crate::telemetry::LogLevel;
use crate::telemetry::Metric;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Engine, ExternType, FuncType, Linker, Module, Val, ValType};

type C<'a> = Caller<'a, HostState>;

/// proxy-wasm status for the guest, or a trap.
fn status(result: HostResult) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(Status::Ok as i32),
        Err(HostError::Status(s)) => Ok(s as i32),
        Err(HostError::Trap(e)) => Err(e),
    }
}

/// WASI errno for the guest, or a trap.
fn wasi(result: Result<(), HostError>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(errno::SUCCESS),
        Err(HostError::Status(Status::InvalidMemoryAccess)) => Ok(errno::FAULT),
        Err(HostError::Status(_)) => Ok(errno::INVAL),
        Err(HostError::Trap(e)) => Err(e),
    }
}

/// The module names WASI preview 1 is imported from.
pub const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// Where a host function is imported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imports {
    /// `env`: the proxy-wasm ABI (and the two Emscripten helpers Envoy's host provides).
    Env,
    /// Both WASI module names ([`WASI_MODULES`]): Envoy's host serves the same functions under
    /// each, as older toolchains (TinyGo, Emscripten) import `wasi_unstable`, whose signatures for
    /// these functions are the same.
    Wasi,
}

impl Imports {
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Imports::Env => &["env"],
            Imports::Wasi => &WASI_MODULES,
        }
    }
}

/// A Wasm value type of a host function's parameter or result (host functions take and return
/// only integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmType {
    I32,
    I64,
}

impl WasmType {
    pub fn val_type(self) -> ValType {
        match self {
            WasmType::I32 => ValType::I32,
            WasmType::I64 => ValType::I64,
        }
    }

    /// As the text format spells it (`i32`, `i64`).
    pub fn name(self) -> &'static str {
        match self {
            WasmType::I32 => "i32",
            WasmType::I64 => "i64",
        }
    }
}

/// Whether a host function may run during an init that is being snapshotted. A snapshot restores
/// guest memory and globals plus the [`HostSnapshot`](crate::snapshot::HostSnapshot) record, and
/// nothing else: a call that reads or changes any other host state would leave a resumed
/// instance (possibly in another process) in a state its init did not produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// Leaves no host state a snapshot cannot restore (what it reads is fixed for the tenant, or
    /// becomes part of guest memory as any value init computes; what it sets is in `HostSnapshot`).
    Allowed,
    /// Allowed only when init's HTTP calls are answered from the tenant's recorded init calls
    /// (`init_calls::Replay`, [`SnapshotInit::ReplayingCalls`]): making the call and reading its
    /// answer are then the same in every instance, all host-side.
    WhenReplaying,
    /// Refuses the snapshot: the call traps, naming itself, so `snapshot::create` fails with
    /// `CreateError::Unsupported` and the tenant falls back to per-worker init.
    Forbidden,
}

impl Snapshot {
    /// Whether a snapshotted init of kind `init` may make the call.
    pub fn allows(self, init: SnapshotInit) -> bool {
        match self {
            Snapshot::Allowed => true,
            Snapshot::WhenReplaying => init == SnapshotInit::ReplayingCalls,
            Snapshot::Forbidden => false,
        }
    }
}

/// Registers a row's implementation under one module name.
type Link = fn(&mut Linker<HostState>, &str) -> wasmtime::Result<()>;

/// One row of the host-function table.
pub struct HostFunction {
    pub imports: Imports,
    pub name: &'static str,
    /// Parameter names (as the row spells them; `_`-prefixed: unused) and types.
    pub params: &'static [(&'static str, WasmType)],
    pub results: &'static [WasmType],
    pub snapshot: Snapshot,
    link: Link,
}

impl HostFunction {
    pub fn func_type(&self, engine: &Engine) -> FuncType {
        FuncType::new(engine, self.params.iter().map(|(_, t)| t.val_type()), self.results.iter().map(|t| t.val_type()))
    }
}

impl std::fmt::Debug for HostFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFunction")
            .field("imports", &self.imports)
            .field("name", &self.name)
            .field("params", &self.params)
            .field("results", &self.results)
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

/// Every host function thaw implements, one row each.
pub fn host_functions() -> impl Iterator<Item = &'static HostFunction> {
    HOST_FUNCTIONS.iter()
}

/// Builds [`HOST_FUNCTIONS`] from rows of the form
/// `imports name(param: type, ...) -> result, Policy, |caller| implementation;`
/// where `imports` is `env` or `wasi`, types are `i32` / `i64`, the result is optional (none: the
/// function returns nothing), and the implementation sees the parameters by name and returns
/// `wasmtime::Result` of the result (an `Err` traps).
macro_rules! host_functions {
    (@imports env) => { Imports::Env };
    (@imports wasi) => { Imports::Wasi };
    (@type i32) => { WasmType::I32 };
    (@type i64) => { WasmType::I64 };
    (@result) => { () };
    (@result $t:ident) => { $t };
    ($( $imports:ident $name:ident ( $($param:ident : $ty:ident),* ) $(-> $result:ident)?, $policy:ident,
        |$c:pat_param| $body:expr; )*) => {
        static HOST_FUNCTIONS: &[HostFunction] = &[$(
            HostFunction {
                imports: host_functions!(@imports $imports),
                name: stringify!($name),
                params: &[$((stringify!($param), host_functions!(@type $ty))),*],
                results: &[$(host_functions!(@type $result))?],
                snapshot: Snapshot::$policy,
                link: |linker, module| {
                    linker.func_wrap(module, stringify!($name),
                        |$c: C, $($param: $ty),*| -> wasmtime::Result<host_functions!(@result $($result)?)> { $body })?;
                    Ok(())
                },
            },
        )*];
    };
}

host_functions! {
    // Logging, clock, configuration: nothing host-side changes; what they read is fixed for the
    // tenant or becomes guest memory (the time init saw stays the time it saw).
    env proxy_log(level: i32, message: i32, message_len: i32) -> i32, Allowed,
        |c| status(proxy_log(c, level, message, message_len));
    env proxy_get_log_level(level_out: i32) -> i32, Allowed, |c| status(proxy_get_log_level(c, level_out));
    env proxy_get_current_time_nanoseconds(time_out: i32) -> i32, Allowed, |c| status(proxy_get_current_time(c, time_out));
    env proxy_set_effective_context(context_id: i32) -> i32, Allowed, |c| {
        // Only a context that exists (the root, or the stream's): BAD_ARGUMENT otherwise, as Envoy.
        let known = c.data().contexts.contains(&(context_id as u32));
        Ok(if known { Status::Ok } else { Status::BadArgument } as i32)
    };
    // The configuration buffers; during a replayed init also an HTTP call's answer body.
    env proxy_get_buffer_bytes(buffer_type: i32, start: i32, max_size: i32, ptr_out: i32, len_out: i32) -> i32, Allowed,
        |c| status(proxy_get_buffer_bytes(c, buffer_type, start, max_size, ptr_out, len_out));
    env proxy_get_buffer_status(buffer_type: i32, len_out: i32, flags_out: i32) -> i32, Allowed,
        |c| status(proxy_get_buffer_status(c, buffer_type, len_out, flags_out));
    // Header maps: during init only an HTTP call's answer has any, read from the record.
    env proxy_get_header_map_size(map_type: i32, size_out: i32) -> i32, WhenReplaying,
        |c| status(proxy_get_header_map_size(c, map_type, size_out));
    env proxy_get_header_map_pairs(map_type: i32, ptr_out: i32, len_out: i32) -> i32, WhenReplaying,
        |c| status(proxy_get_header_map_pairs(c, map_type, ptr_out, len_out));
    env proxy_set_header_map_pairs(map_type: i32, pairs: i32, pairs_len: i32) -> i32, Forbidden,
        |c| status(proxy_set_header_map_pairs(c, map_type, pairs, pairs_len));
    env proxy_get_header_map_value(map_type: i32, key: i32, key_len: i32, ptr_out: i32, len_out: i32) -> i32, WhenReplaying,
        |c| status(proxy_get_header_map_value(c, map_type, key, key_len, ptr_out, len_out));
    env proxy_add_header_map_value(map_type: i32, key: i32, key_len: i32, value: i32, value_len: i32) -> i32, Forbidden,
        |c| status(change_header(c, map_type, key, key_len, Change::Add(value, value_len)));
    env proxy_replace_header_map_value(map_type: i32, key: i32, key_len: i32, value: i32, value_len: i32) -> i32, Forbidden,
        |c| status(change_header(c, map_type, key, key_len, Change::Replace(value, value_len)));
    env proxy_remove_header_map_value(map_type: i32, key: i32, key_len: i32) -> i32, Forbidden,
        |c| status(change_header(c, map_type, key, key_len, Change::Remove));
    // An effect on a stream: there is none during init, and a snapshot cannot hold one.
    env proxy_send_local_response(status_code: i32, details: i32, details_len: i32, body: i32, body_len: i32,
        headers: i32, headers_len: i32, grpc_status: i32) -> i32, Forbidden,
        |c| status(proxy_send_local_response(c, status_code, details, details_len, body, body_len, headers, headers_len, grpc_status));

    // Recorded in `HostSnapshot` and restored on resume.
    env proxy_set_tick_period_milliseconds(period_ms: i32) -> i32, Allowed, |mut c| {
        c.data_mut().tick_period_ms = period_ms as u32 as u64;
        Ok(Status::Ok as i32)
    };
    env proxy_define_metric(metric_type: i32, name: i32, name_len: i32, id_out: i32) -> i32, Allowed,
        |c| status(proxy_define_metric(c, metric_type, name, name_len, id_out));
    // Metric values are process-wide host state (`metric_values`), which a snapshot does not hold.
    env proxy_increment_metric(metric_id: i32, offset: i64) -> i32, Forbidden,
        |c| status(guest_metric(c, metric_id, MetricOp::Increment(offset)));
    env proxy_record_metric(metric_id: i32, value: i64) -> i32, Forbidden, |c| status(guest_metric(c, metric_id, MetricOp::Record(value)));
    env proxy_get_metric(metric_id: i32, value_out: i32) -> i32, Forbidden,
        |c| status(guest_metric(c, metric_id, MetricOp::Get(value_out)));

    env proxy_set_buffer_bytes(buffer_type: i32, start: i32, size: i32, data: i32, data_len: i32) -> i32, Forbidden,
        |c| status(proxy_set_buffer_bytes(c, buffer_type, start, size, data, data_len));
    env proxy_continue_stream(stream_type: i32) -> i32, Forbidden, |c| status(stream_effect(c, stream_type, false));
    env proxy_close_stream(stream_type: i32) -> i32, Forbidden, |c| status(stream_effect(c, stream_type, true));
    env proxy_get_status(code_out: i32, message_out: i32, message_len_out: i32) -> i32, Forbidden,
        |c| status(proxy_get_status(c, code_out, message_out, message_len_out));
    env proxy_done() -> i32, Forbidden, |_| Ok(Status::NotFound as i32);
    // Emscripten-built guests (the C++ SDK) import these two; Envoy's host provides them.
    env pthread_equal(a: i32, b: i32) -> i32, Forbidden, |_| Ok((a == b) as i32);
    env emscripten_notify_memory_growth(_memory_index: i32), Forbidden, |_| Ok(());
    // ABI 0.1.0 only (Envoy's host links them for 0.1.0 guests).
    env proxy_get_configuration(ptr_out: i32, len_out: i32) -> i32, Allowed, |c| status(proxy_get_configuration(c, ptr_out, len_out));
    env proxy_continue_request() -> i32, Forbidden, |c| status(stream_effect(c, 0, false));
    env proxy_continue_response() -> i32, Forbidden, |c| status(stream_effect(c, 1, false));
    env proxy_clear_route_cache() -> i32, Forbidden, |_| Ok(Status::Ok as i32);

    // Answered from the record during a replayed init (`init_calls`); otherwise there is nothing
    // to deliver an answer to that a snapshot could hold.
    env proxy_http_call(upstream: i32, upstream_len: i32, headers: i32, headers_len: i32, body: i32, body_len: i32,
        trailers: i32, trailers_len: i32, timeout_ms: i32, token_out: i32) -> i32, WhenReplaying,
        |c| status(proxy_http_call(c, [upstream, upstream_len, headers, headers_len, body, body_len, trailers, trailers_len], timeout_ms,
            token_out));
    env proxy_grpc_call(upstream: i32, upstream_len: i32, service: i32, service_len: i32, method: i32, method_len: i32,
        metadata: i32, metadata_len: i32, message: i32, message_len: i32, timeout_ms: i32, token_out: i32) -> i32, Forbidden,
        |c| status(proxy_grpc_call(c, [upstream, upstream_len, service, service_len, method, method_len, metadata, metadata_len,
            message, message_len], timeout_ms, token_out));
    env proxy_grpc_stream(upstream: i32, upstream_len: i32, service: i32, service_len: i32, method: i32, method_len: i32,
        metadata: i32, metadata_len: i32, token_out: i32) -> i32, Forbidden,
        |c| status(proxy_grpc_stream(c, [upstream, upstream_len, service, service_len, method, method_len, metadata, metadata_len],
            token_out));
    env proxy_grpc_send(token: i32, message: i32, message_len: i32, end_stream: i32) -> i32, Forbidden,
        |c| status(proxy_grpc_send(c, token, message, message_len, end_stream));
    env proxy_grpc_close(token: i32) -> i32, Forbidden, |c| status(proxy_grpc_close(c, token));
    env proxy_grpc_cancel(token: i32) -> i32, Forbidden, |c| status(proxy_grpc_cancel(c, token));

    // Properties set are kept per instance, outside `HostSnapshot`.
    env proxy_get_property(path: i32, path_len: i32, ptr_out: i32, len_out: i32) -> i32, Forbidden,
        |c| status(proxy_get_property(c, path, path_len, ptr_out, len_out));
    env proxy_set_property(path: i32, path_len: i32, value: i32, value_len: i32) -> i32, Forbidden,
        |c| status(proxy_set_property(c, path, path_len, value, value_len));

    // Shared data and queues are per-tenant, process-wide host state (`shared`) that a snapshot
    // does not hold: an instance resumed in another process would lack what init wrote (and the
    // queue ids init was given), and a value init read would be baked in. Recording them into
    // `HostSnapshot` is not exactly right either (CAS tokens and queue ids are in guest memory,
    // and other instances of the tenant share the state), so a snapshot of such an init is refused.
    env proxy_get_shared_data(key: i32, key_len: i32, ptr_out: i32, len_out: i32, cas_out: i32) -> i32, Forbidden,
        |c| status(proxy_get_shared_data(c, key, key_len, ptr_out, len_out, cas_out));
    env proxy_set_shared_data(key: i32, key_len: i32, value: i32, value_len: i32, cas: i32) -> i32, Forbidden,
        |c| status(proxy_set_shared_data(c, key, key_len, value, value_len, cas));
    env proxy_register_shared_queue(name: i32, name_len: i32, id_out: i32) -> i32, Forbidden,
        |c| status(proxy_register_shared_queue(c, name, name_len, id_out));
    env proxy_resolve_shared_queue(vm_id: i32, vm_id_len: i32, name: i32, name_len: i32, id_out: i32) -> i32, Forbidden,
        |c| status(proxy_resolve_shared_queue(c, vm_id, vm_id_len, name, name_len, id_out));
    env proxy_enqueue_shared_queue(queue_id: i32, value: i32, value_len: i32) -> i32, Forbidden,
        |c| status(proxy_enqueue_shared_queue(c, queue_id, value, value_len));
    env proxy_dequeue_shared_queue(queue_id: i32, ptr_out: i32, len_out: i32) -> i32, Forbidden,
        |c| status(proxy_dequeue_shared_queue(c, queue_id, ptr_out, len_out));

    env proxy_call_foreign_function(name: i32, name_len: i32, args: i32, args_len: i32, _results_out: i32, _results_len_out: i32)
        -> i32, Forbidden, |c| {
        // thaw registers no foreign functions: every name is NOT_FOUND (once name and arguments
        // are readable), as Envoy answers for names it does not know.
        status(memory::read(&c, name, name_len).and_then(|_| memory::read(&c, args, args_len)).and_then(|_| Err(Status::NotFound.into())))
    };

    // WASI: none keeps host state (`fd_write` logs; `random_get` and the clocks hand values to
    // guest memory, which the snapshot then holds as any value init computed).
    wasi fd_write(fd: i32, iovs: i32, iovs_len: i32, written_out: i32) -> i32, Allowed, |c| fd_write(c, fd, iovs, iovs_len, written_out);
    wasi fd_read(_fd: i32, _iovs: i32, _iovs_len: i32, _read_out: i32) -> i32, Allowed, |_| Ok(errno::NOSYS);
    wasi fd_seek(_fd: i32, _offset: i64, _whence: i32, _offset_out: i32) -> i32, Allowed, |_| Ok(errno::SUCCESS);
    wasi fd_close(_fd: i32) -> i32, Allowed, |_| Ok(errno::SUCCESS);
    wasi fd_fdstat_get(fd: i32, stat_out: i32) -> i32, Allowed, |c| fd_fdstat_get(c, fd, stat_out);
    wasi fd_prestat_get(_fd: i32, _prestat_out: i32) -> i32, Allowed, |_| Ok(errno::BADF);
    wasi fd_prestat_dir_name(_fd: i32, _path: i32, _path_len: i32) -> i32, Allowed, |_| Ok(errno::NOSYS);
    wasi path_open(_dir_fd: i32, _dir_flags: i32, _path: i32, _path_len: i32, _open_flags: i32, _rights_base: i64,
        _rights_inheriting: i64, _fd_flags: i32, _fd_out: i32) -> i32, Allowed, |_| Ok(errno::NOENT);
    wasi clock_time_get(clock_id: i32, _precision: i64, time_out: i32) -> i32, Allowed, |c| clock_time_get(c, clock_id, time_out);
    wasi random_get(buf: i32, buf_len: i32) -> i32, Allowed, |c| wasi(random_get(c, buf, buf_len));
    wasi environ_sizes_get(count_out: i32, size_out: i32) -> i32, Allowed, |c| wasi(zero_sizes(c, count_out, size_out));
    wasi environ_get(_environ: i32, _environ_buf: i32) -> i32, Allowed, |_| Ok(errno::SUCCESS);
    wasi args_sizes_get(count_out: i32, size_out: i32) -> i32, Allowed, |c| wasi(zero_sizes(c, count_out, size_out));
    wasi args_get(_argv: i32, _argv_buf: i32) -> i32, Allowed, |_| Ok(errno::SUCCESS);
    wasi proc_exit(code: i32), Allowed, |_| Err(wasmtime::Error::msg(format!("guest called proc_exit({code})")));
}

/// Links every row of the table into `linker`, under each of its module names. For a snapshotted
/// init (`init`), a row whose [`Snapshot`] policy does not allow the call is linked as a function
/// of the same type that traps, naming the call: the init fails, and with it the snapshot.
/// A linker holding the table's host functions for `engine` (forbidding, for a snapshotted
/// `init`, those whose policy does not allow it). Without `init`, a copy of one kept per engine:
/// defining every host function costs more than copying the definitions, and each module loaded
/// needs its own linker (its stubs differ).
pub fn linker(engine: &Engine, init: Option<SnapshotInit>) -> wasmtime::Result<Linker<HostState>> {
    static PLAIN: Mutex<Option<Linker<HostState>>> = Mutex::new(None);
    if init.is_some() {
        let mut linker = Linker::new(engine);
        add_to_linker(&mut linker, init)?;
        return Ok(linker);
    }
    let mut kept = PLAIN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(linker) = kept.as_ref().filter(|l| Engine::same(l.engine(), engine)) {
        return Ok(linker.clone());
    }
    let mut linker = Linker::new(engine);
    add_to_linker(&mut linker, None)?;
    *kept = Some(linker.clone());
    Ok(linker)
}

fn add_to_linker(linker: &mut Linker<HostState>, init: Option<SnapshotInit>) -> wasmtime::Result<()> {
    for row in host_functions() {
        for module in row.imports.modules() {
            match init {
                Some(init) if !row.snapshot.allows(init) => {
                    let ty = row.func_type(linker.engine());
                    forbid(linker, module, row.name, ty)?;
                }
                _ => (row.link)(linker, module)?,
            }
        }
    }
    Ok(())
}

/// Defines `module.name` as a function of type `ty` that traps, naming itself, as a snapshotted
/// init must not make the call.
fn forbid(linker: &mut Linker<HostState>, module: &str, name: &str, ty: FuncType) -> wasmtime::Result<()> {
    let name_owned = name.to_string();
    linker.func_new(module, name, ty, move |_, _, _| {
        Err(wasmtime::Error::msg(format!("init called {name_owned}, which is not allowed while snapshotting")))
    })?;
    Ok(())
}

/// `fd_fdstat_get` for stdout and stderr (a character device that may be written), as Envoy's
/// host answers; any other descriptor EBADF.
fn fd_fdstat_get(mut c: C, fd: i32, out: i32) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    // filetype u8 (2: character device), flags u16, rights_base u64 (fd_write = 64), inheriting u64.
    let mut stat = [0u8; 24];
    stat[0] = 2;
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    let _ = memory::write(&mut c, out, &stat);
    Ok(errno::SUCCESS)
}

/// Defines a stub for every function `module` imports from `env` or WASI that `linker` lacks.
/// Other imports (another module name, memories, tables, globals) are refused with their name.
/// For a snapshotted init (`init`), an unknown `env` function traps instead (what thaw does not
/// implement has no row, so no policy that allows it); an unknown WASI one still answers ENOSYS.
pub fn add_stubs_for_unknown_imports(linker: &mut Linker<HostState>, module: &Module, init: Option<SnapshotInit>) -> Result<(), String> {
    linker.allow_shadowing(false);
    let mut stubbed = HashSet::new();
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!("imports {module_name}.{name}, which is not a function (thaw provides only functions)"));
        };
        let unimplemented = match module_name {
            "env" => Status::Unimplemented as i32,
            m if WASI_MODULES.contains(&m) => errno::NOSYS,
            other => return Err(format!("imports {other}.{name}; only `env`, `wasi_snapshot_preview1` and `wasi_unstable` are provided")),
        };
        // A row of the table defines it (implemented, or forbidden by its snapshot policy):
        // nothing to stub. Asked of the table, not by a failing definition: an error would
        // capture a backtrace (under RUST_BACKTRACE), whose cost grows with every loaded module.
        if provides(module_name, name) || !stubbed.insert((module_name, name)) {
            continue;
        }
        if init.is_some() && module_name == "env" {
            forbid(linker, module_name, name, ty.clone()).map_err(|e| format!("{module_name}.{name}: {e:#}"))?;
            continue;
        }
        let name_owned = format!("{module_name}.{name}");
        let results: Vec<ValType> = ty.results().collect();
        linker
            .func_new(module_name, name, ty.clone(), move |caller, _params, out| {
                log_unimplemented_once(&caller.data().tenant.to_string(), &name_owned);
                for (slot, ty) in out.iter_mut().zip(&results) {
                    *slot = match ty {
                        ValType::I32 => Val::I32(unimplemented),
                        ValType::I64 => Val::I64(unimplemented as i64),
                        _ => Val::default_for_ty(ty).unwrap_or(Val::I32(0)),
                    };
                }
                Ok(())
            })
            .map_err(|e| format!("{module_name}.{name}: {e:#}"))?;
    }
    Ok(())
}

/// Whether a row of the table defines `module.name`.
fn provides(module: &str, name: &str) -> bool {
    host_functions().any(|row| row.name == name && row.imports.modules().contains(&module))
}

fn log_unimplemented_once(tenant: &str, name: &str) {
    static SEEN: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert((tenant.to_string(), name.to_string())) {
        log_at!(Warn, "thaw: tenant `{tenant}` called {name}, which thaw does not implement; answered UNIMPLEMENTED");
    }
}

fn proxy_log(c: C, level: i32, ptr: i32, len: i32) -> HostResult {
    let level = LogLevel::try_from(level)?;
    let message = memory::read(&c, ptr, len)?;
    crate::telemetry::log(level, &format!("wasm [{}]: {}", c.data().tenant, String::from_utf8_lossy(&message)));
    Ok(())
}

fn proxy_get_log_level(mut c: C, out: i32) -> HostResult {
    memory::write_u32(&mut c, out, crate::telemetry::current_level() as u32)
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn proxy_get_current_time(mut c: C, out: i32) -> HostResult {
    memory::write_u64(&mut c, out, now_nanos())
}

/// The bytes of a buffer the guest can read, or the status that says why not.
fn buffer(c: &C, buffer_type: i32) -> HostResult<std::sync::Arc<[u8]>> {
    match BufferType::try_from(buffer_type)? {
        // As Envoy's host: the plugin configuration only while configuring.
        BufferType::PluginConfiguration if c.data().phase() == super::host::Phase::Configure => Ok(c.data().plugin_config.clone()),
        BufferType::VmConfiguration => Ok(c.data().vm_config.clone()),
        BufferType::HttpRequestBody => body(c, Direction::Request),
        BufferType::HttpResponseBody => body(c, Direction::Response),
        BufferType::HttpCallResponseBody if c.data().phase() == super::host::Phase::HttpCallResponse => {
            c.data().call_response().map(|r| r.body.as_slice().into()).ok_or_else(|| Status::NotFound.into())
        }
        BufferType::GrpcReceiveBuffer if c.data().phase() == super::host::Phase::GrpcResponse => {
            c.data().call_response().map(|r| r.body.as_slice().into()).ok_or_else(|| Status::NotFound.into())
        }
        // No HTTP or gRPC call responses, TCP data or foreign-function arguments exist in this call.
        _ => Err(Status::NotFound.into()),
    }
}

/// ABI 0.1.0's `proxy_get_configuration`: the plugin configuration during `proxy_on_configure`,
/// the VM configuration otherwise (Envoy's host).
fn proxy_get_configuration(mut c: C, ptr_out: i32, len_out: i32) -> HostResult {
    let config =
        if c.data().phase() == super::host::Phase::Configure { c.data().plugin_config.clone() } else { c.data().vm_config.clone() };
    memory::return_bytes(&mut c, &config, ptr_out, len_out)
}

/// A stream body as the guest reads it: what this callback sees of it, or empty (Envoy's host
/// always has a body buffer for an HTTP context, empty until body data arrives).
fn body(c: &C, direction: Direction) -> HostResult<std::sync::Arc<[u8]>> {
    let body = c.data().stream().and_then(|s| s.body(direction)).unwrap_or_default();
    Ok(body.into())
}

/// Envoy's semantics: start 0 drains `size` bytes and prepends the data (so (0, 0) prepends and
/// (0, length) replaces); start >= length appends; any other start is BAD_ARGUMENT.
fn proxy_set_buffer_bytes(mut c: C, t: i32, start: i32, size: i32, ptr: i32, len: i32) -> HostResult {
    let buffer_type = BufferType::try_from(t)?;
    buffer(&c, t)?;
    let data = memory::read(&c, ptr, len)?;
    let direction = match buffer_type {
        BufferType::HttpRequestBody => Direction::Request,
        BufferType::HttpResponseBody => Direction::Response,
        // Configurations and call responses are read-only.
        _ => return Err(Status::BadArgument.into()),
    };
    let stream = c.data_mut().stream_mut().ok_or(Status::BadArgument)?;
    // No body here (e.g. the request headers callback): nothing to change, as Envoy answers.
    let current = stream.body(direction).ok_or(Status::BadArgument)?;
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    let mut body = Vec::with_capacity(current.len() + data.len());
    if start == 0 {
        body.extend_from_slice(&data);
        body.extend_from_slice(&current[size.min(current.len())..]);
    } else if start >= current.len() {
        body.extend_from_slice(&current);
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    if stream.set_body(direction, &body) {
        Ok(())
    } else {
        Err(Status::BadArgument.into())
    }
}

/// `proxy_continue_stream` / `proxy_close_stream`. For an HTTP filter, as Envoy's host answers:
/// request and response act (on this stream; nothing without one); downstream is accepted;
/// continuing upstream is UNIMPLEMENTED; other types BAD_ARGUMENT.
fn stream_effect(mut c: C, stream_type: i32, close: bool) -> HostResult {
    let direction = match (stream_type, close) {
        (0, _) => Direction::Request,
        (1, _) => Direction::Response,
        (2, _) | (3, true) => return Ok(()),
        (3, false) => return Err(Status::Unimplemented.into()),
        _ => return Err(Status::BadArgument.into()),
    };
    if c.data().stream().is_some() {
        c.data_mut().effects.push(if close { Effect::Close } else { Effect::Continue(direction) });
    }
    Ok(())
}

/// The status and message of the gRPC call being reported (`proxy_on_grpc_close` and friends);
/// outside those callbacks, OK and no message (Envoy's host keeps them on the root context).
fn proxy_get_status(mut c: C, code_out: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let (code, message) = c.data().grpc_status().cloned().unwrap_or_default();
    memory::write_u32(&mut c, code_out, code)?;
    memory::return_bytes(&mut c, &message, ptr_out, len_out)
}

/// `proxy_grpc_call` from an HTTP context: one gRPC message over Envoy's HTTP/2 stream callouts to
/// the cluster named `upstream`; the token is numbered per instance (`host::Calls`).
fn proxy_grpc_call(mut c: C, args: [i32; 10], timeout: i32, token_out: i32) -> HostResult {
    let [up, ul, sp, sl, mp, ml, hp, hl, bp, bl] = args;
    let cluster = memory::read(&c, up, ul)?;
    let service = memory::read(&c, sp, sl)?;
    let method = memory::read(&c, mp, ml)?;
    let metadata = memory::read_header_map(&c, hp, hl)?;
    let message = memory::read(&c, bp, bl)?;
    memory::check_in_bounds(&c, token_out, 4)?;
    let (headers, body) = super::grpc::request(&service, &method, &metadata, &message, &cluster);
    let id = start_call_stream(&mut c, &cluster, &headers, &body, true, timeout as u32 as u64)?;
    let token = c.data_mut().calls.add(CallKind::GrpcCall, id);
    memory::write_u32(&mut c, token_out, token)
}

/// Starts a call stream through the current call's callouts (the request's, or a root context's
/// config callouts).
fn start_call_stream(
    c: &mut C,
    cluster: &[u8],
    headers: &[crate::stream::HeaderPair],
    body: &[u8],
    end_stream: bool,
    timeout: u64,
) -> HostResult<u64> {
    // During init there is nothing to deliver a response to.
    let callouts = c.data_mut().callouts().ok_or(Status::InternalFailure)?;
    callouts.start_call_stream(cluster, headers, body, end_stream, timeout).map_err(|e| call_status(e).into())
}

/// Sends on (or, with `reset`, resets) a call stream through the current call's callouts.
fn on_call_stream(c: &mut C, id: u64, data: &[u8], end_stream: bool, reset: bool) -> bool {
    let Some(callouts) = c.data_mut().callouts() else { return false };
    if reset {
        callouts.reset_call_stream(id);
        true
    } else {
        callouts.send_call_stream(id, data, end_stream)
    }
}

fn call_status(e: crate::stream::CallError) -> Status {
    match e {
        crate::stream::CallError::BadRequest => Status::BadArgument,
        crate::stream::CallError::Unavailable => Status::InternalFailure,
    }
}

/// `proxy_grpc_stream` from an HTTP context: a gRPC stream over one Envoy call stream, opened with
/// the headers only; messages follow with `proxy_grpc_send`.
fn proxy_grpc_stream(mut c: C, args: [i32; 8], token_out: i32) -> HostResult {
    let [up, ul, sp, sl, mp, ml, hp, hl] = args;
    let cluster = memory::read(&c, up, ul)?;
    let service = memory::read(&c, sp, sl)?;
    let method = memory::read(&c, mp, ml)?;
    let metadata = memory::read_header_map(&c, hp, hl)?;
    memory::check_in_bounds(&c, token_out, 4)?;
    let (headers, _) = super::grpc::request(&service, &method, &metadata, &[], &cluster);
    let id = start_call_stream(&mut c, &cluster, &headers, &[], false, 0)?;
    let token = c.data_mut().calls.add(CallKind::GrpcStream, id);
    memory::write_u32(&mut c, token_out, token)
}

/// Envoy's id of the gRPC call or stream the guest's `token` names, if the token is of one of
/// `kinds`: BAD_ARGUMENT for a token of another kind, NOT_FOUND for one that is not out (Envoy).
fn call_of(c: &C, token: i32, kinds: &[CallKind]) -> HostResult<u64> {
    let token = token as u32;
    if !CallKind::of(token).is_some_and(|k| kinds.contains(&k)) {
        return Err(Status::BadArgument.into());
    }
    c.data().calls.envoy_id(token).ok_or_else(|| Status::NotFound.into())
}

/// `proxy_grpc_send`: one framed message on a gRPC stream, optionally closing the sending side.
fn proxy_grpc_send(mut c: C, token: i32, mp: i32, ml: i32, end_stream: i32) -> HostResult {
    let message = memory::read(&c, mp, ml)?;
    let id = call_of(&c, token, &[CallKind::GrpcStream])?;
    if on_call_stream(&mut c, id, &super::grpc::frame(&message), end_stream != 0, false) {
        Ok(())
    } else {
        Err(Status::NotFound.into())
    }
}

/// `proxy_grpc_close`: closes the sending side of a gRPC stream (the response may still come);
/// a unary call is cancelled.
fn proxy_grpc_close(mut c: C, token: i32) -> HostResult {
    let id = call_of(&c, token, &[CallKind::GrpcCall, CallKind::GrpcStream])?;
    if CallKind::of(token as u32) == Some(CallKind::GrpcCall) {
        return proxy_grpc_cancel(c, token);
    }
    if on_call_stream(&mut c, id, &[], true, false) {
        Ok(())
    } else {
        Err(Status::NotFound.into())
    }
}

/// `proxy_grpc_cancel`: resets the call's stream; the guest hears nothing more of it.
fn proxy_grpc_cancel(mut c: C, token: i32) -> HostResult {
    let id = call_of(&c, token, &[CallKind::GrpcCall, CallKind::GrpcStream])?;
    if !on_call_stream(&mut c, id, &[], true, true) {
        return Err(Status::NotFound.into());
    }
    c.data_mut().calls.remove(token as u32);
    Ok(())
}

fn proxy_get_property(mut c: C, pp: i32, pl: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let raw = memory::read(&c, pp, pl)?;
    if raw.is_empty() {
        // Envoy's host evaluates an empty path to no value, which it cannot serialize.
        return Err(Status::SerializationFailure.into());
    }
    if let Some(value) = c.data().properties.get(&raw).cloned() {
        return memory::return_bytes(&mut c, &value, ptr_out, len_out);
    }
    let source = match properties::structured(&properties::segments(&raw)) {
        Some(source) => source,
        None => properties::lookup(&properties::dotted(&raw).ok_or(Status::BadArgument)?).ok_or(Status::NotFound)?,
    };
    let value = match source {
        properties::Source::Tenant => c.data().tenant.as_str().as_bytes().to_vec(),
        properties::Source::RootId => c.data().root_id.as_bytes().to_vec(),
        properties::Source::Headers(kind) => {
            let pairs = c.data().stream().and_then(|s| s.headers(kind)).ok_or(Status::NotFound)?;
            header_map::encode(&pairs)
        }
        properties::Source::Attribute(id, kind) => {
            let stream = c.data().stream().ok_or(Status::NotFound)?;
            properties::encode(stream.attribute(id, kind).ok_or(Status::NotFound)?)
        }
        properties::Source::Metadata { source, namespace, key } => {
            let stream = c.data().stream().ok_or(Status::NotFound)?;
            stream.metadata(source, &namespace, &key).ok_or(Status::NotFound)?.encode()
        }
        properties::Source::FilterState(key) => {
            let stream = c.data().stream().ok_or(Status::NotFound)?;
            stream.filter_state(&key).ok_or(Status::NotFound)?
        }
    };
    memory::return_bytes(&mut c, &value, ptr_out, len_out)
}

/// Reads a value the host will keep beyond this call (see `abi::MAX_STORED_VALUE_BYTES`).
fn read_stored(c: &C, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let value = memory::read(c, ptr, len)?;
    if value.len() > abi::MAX_STORED_VALUE_BYTES {
        return Err(Status::BadArgument.into());
    }
    Ok(value)
}

fn proxy_set_property(mut c: C, pp: i32, pl: i32, vp: i32, vl: i32) -> HostResult {
    let path = read_stored(&c, pp, pl)?;
    let value = read_stored(&c, vp, vl)?;
    c.data_mut().properties.insert(path, value);
    Ok(())
}

fn proxy_get_shared_data(mut c: C, kp: i32, kl: i32, ptr_out: i32, len_out: i32, cas_out: i32) -> HostResult {
    let key = memory::read(&c, kp, kl)?;
    memory::check_in_bounds(&c, cas_out, 4)?;
    let (value, cas) = shared::get(c.data().tenant.as_str(), &key)?;
    memory::return_bytes(&mut c, &value, ptr_out, len_out)?;
    memory::write_u32(&mut c, cas_out, cas)
}

fn proxy_set_shared_data(c: C, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> HostResult {
    let key = read_stored(&c, kp, kl)?;
    let value = read_stored(&c, vp, vl)?;
    Ok(shared::set(c.data().tenant.as_str(), &key, &value, cas as u32)?)
}

fn proxy_register_shared_queue(mut c: C, np: i32, nl: i32, out: i32) -> HostResult {
    let name = read_stored(&c, np, nl)?;
    memory::check_in_bounds(&c, out, 4)?;
    let from_root = c.data().stream().is_none();
    let id = shared::register_queue(c.data().tenant.as_str(), &name, from_root)?;
    memory::write_u32(&mut c, out, id)
}

fn proxy_resolve_shared_queue(mut c: C, vp: i32, vl: i32, np: i32, nl: i32, out: i32) -> HostResult {
    let vm_id = memory::read(&c, vp, vl)?;
    let name = memory::read(&c, np, nl)?;
    let id = shared::resolve_queue(c.data().tenant.as_str(), &vm_id, &name)?;
    memory::write_u32(&mut c, out, id)
}

fn proxy_enqueue_shared_queue(c: C, id: i32, vp: i32, vl: i32) -> HostResult {
    let value = read_stored(&c, vp, vl)?;
    Ok(shared::enqueue(c.data().tenant.as_str(), id as u32, &value)?)
}

fn proxy_dequeue_shared_queue(mut c: C, id: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let value = shared::dequeue(c.data().tenant.as_str(), id as u32)?;
    memory::return_bytes(&mut c, &value, ptr_out, len_out)
}

fn proxy_get_buffer_bytes(mut c: C, t: i32, start: i32, max: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let bytes = buffer(&c, t)?;
    let start = (start as u32 as usize).min(bytes.len());
    let end = start.saturating_add(max as u32 as usize).min(bytes.len());
    // Nothing to hand over is (NULL, 0), as Envoy's host writes it.
    memory::return_bytes(&mut c, &bytes[start..end], ptr_out, len_out)
}

fn proxy_get_buffer_status(mut c: C, t: i32, len_out: i32, flags_out: i32) -> HostResult {
    let bytes = buffer(&c, t)?;
    memory::write_u32(&mut c, len_out, bytes.len() as u32)?;
    memory::write_u32(&mut c, flags_out, 0)
}

/// The HTTP header map `kind` if it is available in this callback (Envoy's host answers
/// BAD_ARGUMENT for a map that is not, and for HTTP/gRPC call maps outside their callbacks).
/// Callers decode the map type first and read guest memory next, as Envoy's host does.
fn http_map_now(c: &C, map: MapType) -> HostResult<HeaderKind> {
    match map {
        MapType::Http(kind) if c.data().has_map(kind) => Ok(kind),
        _ => Err(Status::BadArgument.into()),
    }
}

/// The pairs of map `map` now: a stream map, or a call response map in its callback; `None` when
/// the map is not available now.
fn map_pairs(c: &C, map: MapType) -> Option<Vec<crate::stream::HeaderPair>> {
    match map {
        MapType::Http(_) => {
            let kind = http_map_now(c, map).ok()?;
            c.data().stream().and_then(|s| s.headers(kind))
        }
        kind => {
            let phase = if matches!(kind, MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers) {
                super::host::Phase::HttpCallResponse
            } else {
                super::host::Phase::GrpcResponse
            };
            let response = c.data().call_response().filter(|_| c.data().phase() == phase)?;
            let headers = matches!(kind, MapType::HttpCallResponseHeaders | MapType::GrpcReceiveInitialMetadata);
            Some(if headers { response.headers.clone() } else { response.trailers.clone() })
        }
    }
}

/// The map's size as Envoy reports it: the bytes of its keys and values (`HeaderMap::byteSize`),
/// for the stream's own maps only.
fn proxy_get_header_map_size(mut c: C, map: i32, out: i32) -> HostResult {
    let map = MapType::try_from(map)?;
    if !matches!(map, MapType::Http(_)) {
        return Err(Status::BadArgument.into());
    }
    let pairs = map_pairs(&c, map).ok_or(Status::BadArgument)?;
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    memory::write_u32(&mut c, out, bytes as u32)
}

/// Every pair of the map; a map that is not available now reads as empty, as in Envoy's host.
fn proxy_get_header_map_pairs(mut c: C, map: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let map = MapType::try_from(map)?;
    let pairs = map_pairs(&c, map).unwrap_or_default();
    let bytes = if pairs.is_empty() { Vec::new() } else { header_map::encode(&pairs) };
    memory::return_bytes(&mut c, &bytes, ptr_out, len_out)
}

/// Replaces the whole map. A malformed map reads as empty (Envoy's host: the map is cleared).
fn proxy_set_header_map_pairs(mut c: C, map: i32, ptr: i32, len: i32) -> HostResult {
    let map = MapType::try_from(map)?;
    let new_pairs = memory::read_header_map(&c, ptr, len)?;
    let kind = http_map_now(&c, map)?;
    let stream = c.data_mut().stream_mut().ok_or(Status::BadArgument)?;
    let old = stream.headers(kind).ok_or(Status::BadArgument)?;
    // Replace the whole map: remove every key not kept, then set the new values in order.
    for (key, _) in &old {
        if !new_pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            stream.set_header(kind, key, None);
        }
    }
    let mut written: Vec<&[u8]> = Vec::new();
    for (key, value) in &new_pairs {
        if written.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            stream.add_header(kind, key, value);
        } else {
            stream.set_header(kind, key, Some(value));
            written.push(key);
        }
    }
    Ok(())
}

fn proxy_get_header_map_value(mut c: C, map: i32, kp: i32, kl: i32, ptr_out: i32, len_out: i32) -> HostResult {
    let map = MapType::try_from(map)?;
    let key = memory::read(&c, kp, kl)?;
    let values: Vec<Vec<u8>> = match map {
        MapType::Http(_) => {
            let kind = http_map_now(&c, map)?;
            c.data().stream().and_then(|s| s.header_values(kind, &key)).ok_or(Status::BadArgument)?
        }
        _ => map_pairs(&c, map)
            .ok_or(Status::BadArgument)?
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map(|(_, v)| v)
            .collect(),
    };
    if values.is_empty() {
        // ABI 0.1.0 guests read a missing header as an empty value (Envoy's host).
        if c.data().abi == super::abi::AbiVersion::V0_1_0 {
            return memory::return_bytes(&mut c, &[], ptr_out, len_out);
        }
        return Err(Status::NotFound.into());
    }
    // Several values of one key read as one, joined by commas (as Envoy's host does).
    let value = values.join(&b","[..]);
    memory::return_bytes(&mut c, &value, ptr_out, len_out)
}

enum Change {
    Add(i32, i32),
    Replace(i32, i32),
    Remove,
}

fn change_header(mut c: C, map: i32, kp: i32, kl: i32, change: Change) -> HostResult {
    let map = MapType::try_from(map)?;
    let key = memory::read(&c, kp, kl)?;
    let value = match change {
        Change::Add(vp, vl) | Change::Replace(vp, vl) => Some(memory::read(&c, vp, vl)?),
        Change::Remove => None,
    };
    let kind = http_map_now(&c, map)?;
    let stream = c.data_mut().stream_mut().ok_or(Status::BadArgument)?;
    let done = match (change, value) {
        (Change::Add(..), Some(v)) => stream.add_header(kind, &key, &v),
        (Change::Replace(..), Some(v)) => stream.set_header(kind, &key, Some(&v)),
        _ => stream.set_header(kind, &key, None),
    };
    if done {
        Ok(())
    } else {
        Err(Status::BadArgument.into())
    }
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(c: C, code: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, grpc: i32) -> HostResult {
    let status = u32::try_from(code).ok().filter(|s| (200..600).contains(s)).ok_or(Status::BadArgument)?;
    let details = memory::read(&c, dp, dl)?;
    let body = memory::read(&c, bp, bl)?;
    let headers = memory::read_header_map(&c, hp, hl)?;
    let mut c = c;
    if c.data().stream().is_none() {
        return Err(Status::BadArgument.into());
    }
    // -1 (and anything outside gRPC's codes) means "no gRPC status": Envoy then derives one.
    let grpc_status = u32::try_from(grpc).ok().filter(|g| *g <= 16);
    c.data_mut().effects.push(Effect::LocalReply(LocalReply { status, headers, body, details, grpc_status }));
    Ok(())
}

/// `fd_write` as Envoy's host serves it: only stdout and stderr (anything else EBADF, before any
/// memory is read), one log line per written line, the count of bytes written.
fn fd_write(mut c: C, fd: i32, iovs: i32, count: i32, out: i32) -> wasmtime::Result<i32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(errno::BADF),
    };
    let result = (|| -> HostResult<usize> {
        let mut text = Vec::new();
        let mut written = 0u32;
        // Each iovec is read where it lies; the loop ends at the first one outside memory (so it
        // runs at most memory size / 8 times), and at most MAX_FD_WRITE_BYTES are kept.
        for i in 0..count as u32 {
            let at = (iovs as u32).checked_add(i.checked_mul(8).ok_or(Status::InvalidMemoryAccess)?).ok_or(Status::InvalidMemoryAccess)?;
            let iov = memory::read(&c, at as i32, 8)?;
            let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
            let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
            memory::check_in_bounds(&c, ptr, len as usize)?;
            let keep = (len as usize).min(abi::MAX_FD_WRITE_BYTES - text.len());
            if keep > 0 {
                text.extend(memory::read(&c, ptr, keep as i32)?);
            }
            written = written.wrapping_add(len);
        }
        let tenant = c.data().tenant.clone();
        for line in String::from_utf8_lossy(&text).lines().filter(|l| !l.is_empty()) {
            crate::telemetry::log(level, &format!("wasm [{tenant}] {}: {line}", if fd == 1 { "stdout" } else { "stderr" }));
        }
        memory::write_u32(&mut c, out, written)?;
        Ok(written as usize)
    })();
    wasi(result.map(drop))
}

/// `clock_time_get`: realtime (0) and monotonic (1); other clocks ENOTSUP, as Envoy's host.
fn clock_time_get(mut c: C, id: i32, out: i32) -> wasmtime::Result<i32> {
    let nanos = match id {
        0 => now_nanos(),
        1 => {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
        }
        _ => return Ok(errno::NOTSUP),
    };
    wasi(memory::write_u64(&mut c, out, nanos))
}

fn random_get(mut c: C, ptr: i32, len: i32) -> HostResult {
    let len = len as u32 as usize;
    if len > abi::MAX_RANDOM_GET_BYTES {
        return Err(Status::BadArgument.into());
    }
    let mut bytes = vec![0u8; len];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut bytes).map_err(|_| Status::InternalFailure)?;
    memory::write(&mut c, ptr, &bytes)
}

fn zero_sizes(mut c: C, count: i32, size: i32) -> HostResult {
    memory::write_u32(&mut c, count, 0)?;
    memory::write_u32(&mut c, size, 0)
}

/// Values of guest-defined metrics, process-wide, by tenant and metric name (as Envoy's host keeps
/// them per plugin): every instance of a tenant reads and moves the same value.
fn metric_values() -> &'static Mutex<std::collections::HashMap<(String, String), i64>> {
    static VALUES: std::sync::OnceLock<Mutex<std::collections::HashMap<(String, String), i64>>> = std::sync::OnceLock::new();
    VALUES.get_or_init(Default::default)
}

/// Makes room for `tenant`'s metric `name` among the process-wide values (at most
/// `abi::MAX_GUEST_METRICS` names per tenant).
fn register_metric_name(tenant: &str, name: &str) -> HostResult {
    static NAMES: Mutex<Option<std::collections::HashMap<String, usize>>> = Mutex::new(None);
    let mut values = metric_values().lock().unwrap_or_else(|p| p.into_inner());
    let key = (tenant.to_string(), name.to_string());
    if values.contains_key(&key) {
        return Ok(());
    }
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let count = names.get_or_insert_with(Default::default).entry(tenant.to_string()).or_insert(0);
    if *count >= abi::MAX_GUEST_METRICS {
        return Err(Status::BadArgument.into());
    }
    *count += 1;
    values.insert(key, 0);
    Ok(())
}

/// Metric ids as Envoy's host makes them: the low two bits are the type (counter 0, gauge 1,
/// histogram 2), the rest counts the metrics of that type (1, 2, ...), in definition order.
fn metric_id(metrics: &[(u32, String)], index: usize) -> u32 {
    let metric_type = metrics[index].0;
    let nth = metrics[..=index].iter().filter(|(t, _)| *t == metric_type).count() as u32;
    (nth << 2) | metric_type
}

/// The metric an id names: (type, name), if defined.
fn metric_by_id(metrics: &[(u32, String)], id: u32) -> Option<(u32, String)> {
    let (metric_type, nth) = (id & 3, (id >> 2) as usize);
    metrics.iter().filter(|(t, _)| *t == metric_type).nth(nth.checked_sub(1)?).cloned()
}

fn proxy_define_metric(mut c: C, metric_type: i32, np: i32, nl: i32, out: i32) -> HostResult {
    let name = memory::read(&c, np, nl)?;
    if !(0..=2).contains(&metric_type) {
        return Err(Status::BadArgument.into());
    }
    let name = String::from_utf8(name).map_err(|_| Status::BadArgument)?;
    register_metric_name(c.data().tenant.as_str(), &name)?;
    let metrics = &mut c.data_mut().metrics;
    let index = match metrics.iter().position(|(t, n)| *t == metric_type as u32 && *n == name) {
        Some(i) => i,
        None => {
            metrics.push((metric_type as u32, name));
            metrics.len() - 1
        }
    };
    let id = metric_id(metrics, index);
    memory::write_u32(&mut c, out, id)
}

#[derive(Clone, Copy)]
enum MetricOp {
    /// `proxy_increment_metric`.
    Increment(i64),
    /// `proxy_record_metric`: a counter adds, a gauge is set, a histogram records.
    Record(i64),
    Get(i32),
}

/// Moves or reads a guest metric with Envoy's answers: an unknown counter or gauge is NOT_FOUND;
/// incrementing a histogram, or a counter by less than 1, and reading a histogram are
/// BAD_ARGUMENT; recording an unknown metric of any type is NOT_FOUND.
fn guest_metric(mut c: C, id: i32, op: MetricOp) -> HostResult {
    const COUNTER: u32 = 0;
    const HISTOGRAM: u32 = 2;
    let id = id as u32;
    let type_bits = id & 3;
    match op {
        MetricOp::Increment(_) | MetricOp::Get(_) if type_bits > 2 || type_bits == HISTOGRAM => return Err(Status::BadArgument.into()),
        MetricOp::Increment(delta) if type_bits == COUNTER && delta <= 0 && metric_by_id(&c.data().metrics, id).is_some() => {
            return Err(Status::BadArgument.into())
        }
        _ => {}
    }
    let (metric_type, name) = metric_by_id(&c.data().metrics, id).ok_or(Status::NotFound)?;
    let key = (c.data().tenant.to_string(), name.clone());
    let value = {
        let mut values = metric_values().lock().unwrap_or_else(|p| p.into_inner());
        let value = values.entry(key).or_insert(0);
        match (op, metric_type) {
            (MetricOp::Increment(delta), _) | (MetricOp::Record(delta), COUNTER) => *value = value.saturating_add(delta),
            (MetricOp::Record(v), _) => *value = v,
            (MetricOp::Get(_), _) => {}
        }
        *value
    };
    // Export to Envoy's stats when a stream is at hand: a counter by its delta, a gauge by its
    // new value, a histogram by the recorded sample.
    let exported = match (Metric::for_guest_type(metric_type), op) {
        (Some(m @ Metric::GuestCounter), MetricOp::Increment(delta) | MetricOp::Record(delta)) => Some((m, delta)),
        (Some(m @ Metric::GuestGauge), MetricOp::Increment(_) | MetricOp::Record(_)) => Some((m, value)),
        (Some(m @ Metric::GuestHistogram), MetricOp::Record(sample)) => Some((m, sample)),
        _ => None,
    };
    if let Some((metric, amount)) = exported {
        let tenant = c.data().tenant.clone();
        if let Some(stream) = c.data_mut().stream_mut() {
            stream.record_guest(metric, &tenant, &name, amount);
        }
    }
    if let MetricOp::Get(out) = op {
        memory::write_u64(&mut c, out, value as u64)?;
    }
    Ok(())
}

/// `proxy_http_call`: from an HTTP context through the stream's HTTP callouts, from a root context
/// (tick, queue notification) through the filter config's; the token is numbered per instance.
fn proxy_http_call(mut c: C, args: [i32; 8], timeout: i32, token_out: i32) -> HostResult {
    let [up, ul, hp, hl, bp, bl, tp, tl] = args;
    let cluster = memory::read(&c, up, ul)?;
    let headers = memory::read_header_map(&c, hp, hl)?;
    let body = memory::read(&c, bp, bl)?;
    let trailers = memory::read_header_map(&c, tp, tl)?;
    memory::check_in_bounds(&c, token_out, 4)?;
    if !trailers.is_empty() {
        // Envoy's HTTP callouts carry no request trailers.
        return Err(Status::BadArgument.into());
    }
    let timeout = timeout as u32 as u64;
    let state = c.data_mut();
    let started = match state.callouts() {
        Some(callouts) => callouts.http_call(&cluster, &headers, &body, timeout),
        // During init without the config's callouts at hand (see `init_calls`).
        None => {
            use super::init_calls::{CallRequest, InitCalls, REPLAY_ID_BASE};
            match &mut state.init_calls {
                InitCalls::Noted(count) => {
                    *count += 1;
                    Ok(REPLAY_ID_BASE + *count as u64)
                }
                InitCalls::Replay(replay) => {
                    match replay.make(&CallRequest { cluster: cluster.clone(), headers: headers.clone(), body: body.clone() }) {
                        Some(id) => Ok(id),
                        // The instance would start in another state than the tenant's root instance:
                        // it must not serve (it fails; the request is answered per `on_error`).
                        None => {
                            let why = format!("tenant `{}`: an HTTP call during init differs from the recorded ones", state.tenant);
                            return Err(HostError::Trap(wasmtime::Error::msg(why)));
                        }
                    }
                }
                InitCalls::Refused => return Err(Status::InternalFailure.into()),
            }
        }
    };
    let id = started.map_err(call_status)?;
    let token = c.data_mut().calls.add(CallKind::Http, id);
    memory::write_u32(&mut c, token_out, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric names were kept without bound (found with the fuzzer's out-of-memory finding, RELIABILITY.md).
    #[test]
    fn a_tenant_defines_a_bounded_number_of_metric_names() {
        for i in 0..abi::MAX_GUEST_METRICS {
            assert!(register_metric_name("metrics-bound", &format!("m{i}")).is_ok());
        }
        assert!(matches!(register_metric_name("metrics-bound", "one more"), Err(HostError::Status(Status::BadArgument))));
        assert!(register_metric_name("metrics-bound", "m7").is_ok(), "a name already kept is always allowed");
        assert!(register_metric_name("metrics-other", "one more").is_ok(), "another tenant has its own bound");
    }
}
