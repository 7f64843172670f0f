//! Logs into Envoy's logger (or stderr outside Envoy: CLI, tests).
//!
//! Stats as Envoy metrics come with the pools issue; this module is where they will live.

use crate::stream::LogLevel;

/// Logs `message` at `level` through Envoy when loaded by Envoy, else to stderr.
pub fn log(level: LogLevel, message: &str) {
    if !crate::envoy::callbacks::log(level, message) && level >= stderr_level() {
        eprintln!("[thaw][{level:?}] {message}");
    }
}

/// The lowest level Envoy would print now (what `proxy_get_log_level` answers).
pub fn current_level() -> LogLevel {
    crate::envoy::callbacks::lowest_enabled_level().unwrap_or_else(stderr_level)
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
        $crate::telemetry::log($crate::stream::LogLevel::$level, &format!($($arg)*))
    };
}
