//! proxy-wasm 0.2.1 numbers (status codes, enums) and the limits thaw puts on what guests pass in.
//! Every limit lives here with its reason. Guest pointers and lengths have no limit of their own
//! beyond guest memory (bounded by the instance's memory cap), as in Envoy's host.

use crate::stream::HeaderKind;
use crate::telemetry::LogLevel;

/// `proxy_status_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// WASI preview 1 errno values thaw answers with.
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const NOENT: i32 = 44;
    pub const NOTSUP: i32 = 58;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
}

/// What a stream callback returned (`proxy_action_t`: CONTINUE 0, PAUSE 1), kept as the raw number:
/// Envoy's host passes other values through as filter statuses (see `filter::verdict_for`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Action(pub u32);

impl Action {
    pub const CONTINUE: Action = Action(0);
    pub const PAUSE: Action = Action(1);
}

impl From<i32> for Action {
    fn from(v: i32) -> Action {
        Action(v as u32)
    }
}

/// The proxy-wasm ABI a guest declares by exporting `proxy_abi_version_<x>_<y>_<z>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AbiVersion {
    /// 0.1.0: headers callbacks take no `end_of_stream`; StopAllIterationAndBuffer means Watermark.
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

impl AbiVersion {
    /// The export names that declare each version, newest first.
    pub const MARKERS: [(&'static str, AbiVersion); 3] = [
        ("proxy_abi_version_0_2_1", AbiVersion::V0_2_1),
        ("proxy_abi_version_0_2_0", AbiVersion::V0_2_0),
        ("proxy_abi_version_0_1_0", AbiVersion::V0_1_0),
    ];

    /// The version a module declares, from the names of its function exports; `None`: it
    /// declares none (Envoy's Wasm filter refuses such a module).
    pub fn declared<'a>(functions: impl Iterator<Item = &'a str>) -> Option<AbiVersion> {
        let names: Vec<&str> = functions.collect();
        AbiVersion::MARKERS.iter().find(|(name, _)| names.contains(name)).map(|(_, v)| *v)
    }
}

/// Envoy's words when a module declares no ABI version it knows.
pub const MISSING_ABI_VERSION: &str = "Missing or unknown Proxy-Wasm ABI version";

/// `proxy_map_type_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapType {
    Http(HeaderKind),
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl TryFrom<i32> for MapType {
    type Error = Status;
    fn try_from(v: i32) -> Result<MapType, Status> {
        Ok(match v {
            0 => MapType::Http(HeaderKind::RequestHeaders),
            1 => MapType::Http(HeaderKind::RequestTrailers),
            2 => MapType::Http(HeaderKind::ResponseHeaders),
            3 => MapType::Http(HeaderKind::ResponseTrailers),
            4 => MapType::GrpcReceiveInitialMetadata,
            5 => MapType::GrpcReceiveTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    ForeignFunctionArguments,
}

impl TryFrom<i32> for BufferType {
    type Error = Status;
    fn try_from(v: i32) -> Result<BufferType, Status> {
        Ok(match v {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            _ => return Err(Status::BadArgument),
        })
    }
}

impl TryFrom<i32> for LogLevel {
    type Error = Status;
    fn try_from(v: i32) -> Result<LogLevel, Status> {
        LogLevel::ALL.get(usize::try_from(v).map_err(|_| Status::BadArgument)?).copied().ok_or(Status::BadArgument)
    }
}

/// Largest serialized header map read from a guest (Envoy's host: 1 MiB; a larger one reads as
/// an empty map, as there).
pub const MAX_HEADER_MAP_BYTES: usize = 1024 * 1024;
/// Most pairs in a serialized header map (Envoy's host: 1024; more reads as an empty map).
pub const MAX_HEADER_PAIRS: usize = 1024;
/// Largest value the host keeps for a guest beyond the call: a property, a shared-data key or
/// value, a queue item. Envoy's host keeps any size; thaw bounds what outlives a call so that
/// host memory, which no memory cap counts, stays bounded by value (BAD_ARGUMENT above it).
pub const MAX_STORED_VALUE_BYTES: usize = 1024 * 1024;
/// Most shared-data keys one tenant holds, and most bytes (keys and values) in them. Shared data
/// lives as long as the process, outside every instance's memory cap: bounded by value only, one
/// guest could grow Envoy's memory without end by setting ever new keys (the hostcall fuzzer did:
/// RELIABILITY.md, "Fuzzing"). Envoy's host has no bound; a set past one is BAD_ARGUMENT, as a
/// value over `MAX_STORED_VALUE_BYTES` is.
pub const MAX_SHARED_DATA_KEYS: usize = 65_536;
pub const MAX_SHARED_DATA_BYTES: usize = 16 * 1024 * 1024;
/// Most shared queues one tenant registers, and most bytes its queues hold (names, and items not
/// yet dequeued, each counted with `QUEUE_ITEM_OVERHEAD_BYTES` so that empty items count too), for
/// the same reason: a registration or an enqueue past them is BAD_ARGUMENT.
pub const MAX_SHARED_QUEUES: usize = 1024;
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
pub const QUEUE_ITEM_OVERHEAD_BYTES: usize = 32;
/// Most distinct guest metric names one tenant defines: their values are kept process-wide (as
/// Envoy keeps them per plugin) for the life of the process, so new names without end would grow
/// host memory without end, as shared data did. A definition of a new name past it is BAD_ARGUMENT.
pub const MAX_GUEST_METRICS: usize = 1024;
/// Most bytes one `fd_write` logs (the rest is counted as written and dropped): iovecs may point
/// at the same memory many times over, so their total is not bounded by the guest's memory.
pub const MAX_FD_WRITE_BYTES: usize = 1024 * 1024;
/// Largest `random_get` request (Envoy's host: 64 KiB).
pub const MAX_RANDOM_GET_BYTES: usize = 64 * 1024;
/// Most table elements an instance may grow to (a bound on indirect-call tables).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The proxy-wasm ABI version a `.wasm` declares (an exported function named
/// `proxy_abi_version_<x>_<y>_<z>`), read from its export section without compiling it. A module
/// that declares none is refused with Envoy's own words: Envoy's Wasm filter will not run it.
pub fn declared_abi(wasm: &[u8]) -> Result<crate::proxy_wasm::abi::AbiVersion, String> {
    let mut functions = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("not a valid Wasm module: {e}"))? {
            wasmparser::Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| format!("not a valid Wasm module: {e}"))?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        functions.push(export.name);
                    }
                }
            }
            wasmparser::Payload::CodeSectionStart { .. } => break,
            _ => {}
        }
    }
    AbiVersion::declared(functions.into_iter()).ok_or_else(|| MISSING_ABI_VERSION.to_string())
}
