//! Root-context timers (`proxy_set_tick_period_milliseconds` / `proxy_on_tick`).
//!
//! Each tenant whose init set a tick period gets one root instance on Envoy's main thread; a ticker
//! thread asks Envoy (through the config-level scheduler) to run due ticks there, one tenant per
//! event. Ticks therefore run once per tenant per period on the main thread, not once per worker
//! (Envoy's Wasm filter ticks each worker's VM): state a tick builds is shared with workers only
//! through shared data and queues. A failing tick discards the root instance (the next tick makes
//! a new one) and is counted.

use crate::config::TenantId;
use crate::filter::FilterConfig;
use crate::log_at;
use crate::proxy_wasm::{GuestInstance, Plugin};
use crate::telemetry::StatsSink;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the ticker thread looks for due ticks.
const TICKER_RESOLUTION: Duration = Duration::from_millis(5);

struct TickingTenant {
    id: TenantId,
    plugin: Arc<Plugin>,
    root: RefCell<Option<GuestInstance>>,
    period_ms: Arc<AtomicU64>,
}

pub struct Timers {
    tenants: Vec<TickingTenant>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Timers {
    /// Starts ticking every tenant of `config` that has a tick period. `commit(event)` asks Envoy to
    /// call `tick(event)` on the main thread; it is called from the ticker thread.
    pub fn start(config: &FilterConfig, commit: Box<dyn Fn(u64) + Send>) -> Timers {
        let mut tenants: Vec<TickingTenant> = config
            .tenants
            .iter()
            .filter(|(_, t)| t.tick_period_ms > 0)
            .map(|(id, t)| TickingTenant {
                id: id.clone(),
                plugin: Arc::clone(&t.plugin),
                root: RefCell::new(None),
                period_ms: Arc::new(AtomicU64::new(t.tick_period_ms)),
            })
            .collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!tenants.is_empty()).then(|| {
            let periods: Vec<Arc<AtomicU64>> = tenants.iter().map(|t| Arc::clone(&t.period_ms)).collect();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("thaw-ticker".into())
                .spawn(move || ticker(&periods, &stop, commit))
                .expect("spawning the ticker thread")
        });
        if !tenants.is_empty() {
            log_at!(Info, "thaw: ticking {} tenants on the main thread", tenants.len());
        }
        Timers { tenants, stop, thread }
    }

    /// Runs tenant `event`'s tick (main thread).
    pub fn tick(&self, event: u64, stats: &mut dyn StatsSink) {
        let Some(tenant) = self.tenants.get(event as usize) else { return };
        let mut root = tenant.root.borrow_mut();
        if root.is_none() {
            match tenant.plugin.instantiate() {
                Ok(instance) => *root = Some(instance),
                Err(e) => {
                    log_at!(Error, "thaw: tenant `{}`: cannot create its root instance for ticks: {e}", tenant.id);
                    stats.record(e.kind().metric(), &tenant.id, 1);
                    return;
                }
            }
        }
        let instance = root.as_mut().expect("created above");
        match instance.on_tick() {
            Ok(period) => tenant.period_ms.store(period, Ordering::Relaxed),
            Err(e) => {
                log_at!(Error, "thaw: {e} (tick)");
                stats.record(e.kind().metric(), &tenant.id, 1);
                *root = None;
            }
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Timers {
    /// Stops the ticker thread before anything it commits to can go away.
    fn drop(&mut self) {
        self.stop();
    }
}

fn ticker(periods: &[Arc<AtomicU64>], stop: &AtomicBool, commit: Box<dyn Fn(u64) + Send>) {
    let mut due: Vec<Option<Instant>> = vec![None; periods.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICKER_RESOLUTION);
        let now = Instant::now();
        for (i, period) in periods.iter().enumerate() {
            let period = period.load(Ordering::Relaxed);
            if period == 0 {
                due[i] = None;
                continue;
            }
            let next = *due[i].get_or_insert(now + Duration::from_millis(period));
            if now >= next {
                commit(i as u64);
                due[i] = Some(now + Duration::from_millis(period));
            }
        }
    }
}
