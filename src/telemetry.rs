//! Telemetry: thaw's metrics (exported as Envoy stats, visible at `/stats/prometheus`) and logging
//! into Envoy's logger (stderr outside Envoy).
//!
//! The metric catalogue lives here; `envoy::hooks` defines the metrics with Envoy at config
//! creation, and every place that counts does so through a [`StatsSink`] (an Envoy stream, the
//! config being created, or a test fake). Every metric but the three latency histograms is
//! labelled by `tenant` (see [`Metric::labels`]).

use crate::config::TenantId;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric thaw exports. Prometheus names are `envoy_<metrics_namespace>_<name>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Metric {
    /// Histogram, microseconds: a fresh instance from creation to ready (init run).
    ColdStart,
    /// Histogram, microseconds: reading, verifying and loading an artifact at config load.
    AotLoad,
    /// Histogram, microseconds: a fresh instance resumed from a post-init snapshot (no init run).
    SnapshotResume,
    /// Counter: stored snapshots refused (seal, binding or engine mismatch) and replaced.
    SnapshotRefused,
    /// Counter: a pooled tenant's request served by an idle instance.
    PoolHit,
    /// Counter: a pooled tenant's request that needed a fresh instance.
    PoolMiss,
    /// Gauge: instances kept for the tenant (idle, or out serving a request), summed over workers.
    PoolSize,
    /// Counter: artifacts refused because their signature did not verify (or was missing).
    SignatureFailure,
    /// Gauge, labelled by tenant and reason: artifacts refused since the process started, in
    /// every config load, the rejected ones included (a rejected config's own stats are dropped
    /// by Envoy; this tally is carried into every accepted config). See [`refusals`].
    ArtifactRefused,
    /// Counter: requests of a tenant disabled at load (`on_artifact_failure: disable_tenant`),
    /// answered per `on_error`.
    DisabledTenantRequest,
    /// Counter: guest traps (not counting the kinds below).
    GuestTrap,
    /// Counter: guest calls interrupted at their CPU deadline.
    DeadlineExceeded,
    /// Counter: guests that hit their memory cap.
    MemoryCapHit,
    /// Counter: guests that overflowed their stack bound.
    StackOverflow,
    /// Counter: times the tenant entered quarantine (crash loop).
    Quarantine,
    /// Counter: requests answered without running the guest because the tenant is quarantined.
    QuarantinedRequest,
    /// Counter: instances that could not be created (memory budget or instance slots exhausted).
    InstanceRefused,
    /// Counter: idle instances evicted (least recently used tenant first) to stay within the budget.
    InstanceEvicted,
    /// Counter: first requests of a tenant the worker had not served lately, shed (503) because the
    /// worker's `cold_starts` rate was spent.
    ColdStartShed,
    /// Counter: requests answered per `on_error` because the tenant's init calls are not all
    /// answered yet (`proxy_wasm::init_calls`).
    TenantNotReady,
    /// Counter defined by a guest (`proxy_define_metric`), labelled by tenant and metric name.
    GuestCounter,
    /// Gauge defined by a guest.
    GuestGauge,
    /// Histogram defined by a guest.
    GuestHistogram,
}

impl Metric {
    pub const ALL: [Metric; 23] = [
        Metric::ColdStart,
        Metric::AotLoad,
        Metric::SnapshotResume,
        Metric::SnapshotRefused,
        Metric::PoolHit,
        Metric::PoolMiss,
        Metric::PoolSize,
        Metric::SignatureFailure,
        Metric::ArtifactRefused,
        Metric::DisabledTenantRequest,
        Metric::GuestTrap,
        Metric::DeadlineExceeded,
        Metric::MemoryCapHit,
        Metric::StackOverflow,
        Metric::Quarantine,
        Metric::QuarantinedRequest,
        Metric::InstanceRefused,
        Metric::InstanceEvicted,
        Metric::ColdStartShed,
        Metric::TenantNotReady,
        Metric::GuestCounter,
        Metric::GuestGauge,
        Metric::GuestHistogram,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::ColdStart => "wasm_cold_start_microseconds",
            Metric::AotLoad => "wasm_aot_load_microseconds",
            Metric::SnapshotResume => "wasm_snapshot_resume_microseconds",
            Metric::SnapshotRefused => "wasm_snapshot_refused_total",
            Metric::PoolHit => "wasm_pool_hit_total",
            Metric::PoolMiss => "wasm_pool_miss_total",
            Metric::PoolSize => "wasm_instance_pool_size",
            Metric::SignatureFailure => "wasm_signature_verification_failure_total",
            Metric::ArtifactRefused => "wasm_artifact_refused",
            Metric::DisabledTenantRequest => "wasm_disabled_tenant_request_total",
            Metric::GuestTrap => "wasm_guest_trap_total",
            Metric::DeadlineExceeded => "wasm_deadline_exceeded_total",
            Metric::MemoryCapHit => "wasm_memory_cap_hit_total",
            Metric::StackOverflow => "wasm_stack_overflow_total",
            Metric::Quarantine => "wasm_quarantine_total",
            Metric::QuarantinedRequest => "wasm_quarantined_request_total",
            Metric::InstanceRefused => "wasm_instance_refused_total",
            Metric::InstanceEvicted => "wasm_instance_evicted_total",
            Metric::ColdStartShed => "wasm_cold_start_shed_total",
            Metric::TenantNotReady => "wasm_tenant_not_ready_total",
            Metric::GuestCounter => "wasm_guest_counter",
            Metric::GuestGauge => "wasm_guest_gauge",
            Metric::GuestHistogram => "wasm_guest_histogram",
        }
    }

    pub fn kind(self) -> MetricKind {
        match self {
            Metric::ColdStart | Metric::AotLoad | Metric::SnapshotResume | Metric::GuestHistogram => MetricKind::Histogram,
            Metric::PoolSize | Metric::GuestGauge | Metric::ArtifactRefused => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// Label names: guest-defined metrics have `tenant` and `name`, `wasm_artifact_refused` has
    /// `tenant` and `reason`, the latency histograms (cold start, snapshot resume, artifact load)
    /// none, every other metric `tenant`.
    ///
    /// The latency histograms are unlabelled because at every stats flush Envoy visits each
    /// histogram on every worker and merges it on the main thread: one histogram per tenant ever
    /// started grows that work with every tenant a flood of never-seen tenants starts
    /// (RELIABILITY.md, "Cold-tenant floods"). A pooled tenant's fresh instances stay counted per
    /// tenant in `wasm_pool_miss_total`; a per_request tenant makes one for every request.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Metric::ColdStart | Metric::SnapshotResume | Metric::AotLoad => &[],
            Metric::GuestCounter | Metric::GuestGauge | Metric::GuestHistogram => &[TENANT_LABEL, GUEST_NAME_LABEL],
            Metric::ArtifactRefused => &[TENANT_LABEL, REASON_LABEL],
            _ => &[TENANT_LABEL],
        }
    }

    /// The guest metric of proxy-wasm metric type `t` (0 counter, 1 gauge, 2 histogram).
    pub fn for_guest_type(t: u32) -> Option<Metric> {
        [Metric::GuestCounter, Metric::GuestGauge, Metric::GuestHistogram].get(t as usize).copied()
    }

    pub fn index(self) -> usize {
        Metric::ALL.iter().position(|m| *m == self).expect("every metric is in ALL")
    }
}

/// The label every metric but the latency histograms carries.
pub const TENANT_LABEL: &str = "tenant";
/// The second label of guest-defined metrics: the name the guest gave it.
pub const GUEST_NAME_LABEL: &str = "name";
/// The second label of `wasm_artifact_refused`: a `trust::Reason` label.
pub const REASON_LABEL: &str = "reason";

/// The process-wide tally of refused artifacts, by tenant and reason. Envoy discards the stats of
/// a config it rejects, so refusals are kept here and set into every accepted config's
/// `wasm_artifact_refused` gauge (`envoy::hooks`), where `/stats/prometheus` shows them.
pub mod refusals {
    use crate::config::TenantId;
    use crate::trust::Reason;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    static TALLY: Mutex<BTreeMap<(TenantId, Reason), u64>> = Mutex::new(BTreeMap::new());

    pub fn count(tenant: &TenantId, reason: Reason) {
        let mut tally = TALLY.lock().unwrap_or_else(|p| p.into_inner());
        *tally.entry((tenant.clone(), reason)).or_default() += 1;
    }

    /// Every (tenant, reason) refused so far, with its count.
    pub fn all() -> Vec<(TenantId, Reason, u64)> {
        let tally = TALLY.lock().unwrap_or_else(|p| p.into_inner());
        tally.iter().map(|((t, r), n)| (t.clone(), *r, *n)).collect()
    }
}

/// Where metrics go. `value` adds to a counter, is recorded in a histogram, or moves a gauge.
pub trait StatsSink {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64);

    /// A guest-defined metric: a counter moves by `value`, a gauge is set to `value`, a histogram
    /// records `value`. Sinks without a stream drop it (the value stays host-side).
    fn record_guest(&mut self, _metric: Metric, _tenant: &TenantId, _name: &str, _value: i64) {}

    /// Sets a gauge with a second label (`wasm_artifact_refused`) during config creation. Sinks
    /// that are not a config being created drop it.
    fn set_labelled(&mut self, _metric: Metric, _tenant: &TenantId, _second: &str, _value: u64) {}
}

/// Discards metrics (the CLI; code paths that have no stream).
pub struct NoStats;

impl StatsSink for NoStats {
    fn record(&mut self, _: Metric, _: &TenantId, _: i64) {}
}

/// Log levels, in Envoy's (and proxy-wasm's) order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub const ALL: [LogLevel; 6] = [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error, LogLevel::Critical];
}

/// Where log lines go when thaw runs inside Envoy: installed once by `envoy` at program init
/// (lower layers only know this module, never the FFI layer).
pub struct LogSink {
    pub log: fn(LogLevel, &str),
    /// The lowest level the sink would print now.
    pub lowest_enabled: fn() -> LogLevel,
}

static LOG_SINK: std::sync::OnceLock<LogSink> = std::sync::OnceLock::new();

/// Sends logging to `sink` from now on (the first call wins).
pub fn install_log_sink(sink: LogSink) {
    let _ = LOG_SINK.set(sink);
}

/// Logs `message` at `level` through the installed sink (Envoy's logger), else to stderr.
pub fn log(level: LogLevel, message: &str) {
    match LOG_SINK.get() {
        Some(sink) => (sink.log)(level, message),
        None if level >= stderr_level() => eprintln!("[thaw][{level:?}] {message}"),
        None => {}
    }
}

/// The lowest level that would be printed now (what `proxy_get_log_level` answers).
pub fn current_level() -> LogLevel {
    LOG_SINK.get().map(|sink| (sink.lowest_enabled)()).unwrap_or_else(stderr_level)
}

fn stderr_level() -> LogLevel {
    match std::env::var("THAW_LOG").as_deref() {
        Ok("trace") => LogLevel::Trace,
        Ok("debug") => LogLevel::Debug,
        Ok("warn") => LogLevel::Warn,
        Ok("error") => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

#[macro_export]
macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {
        $crate::telemetry::log($crate::telemetry::LogLevel::$level, &format!($($arg)*))
    };
}
