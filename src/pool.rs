//! Per-worker, per-tenant instance pools, the isolation modes, and the per-worker LRU that keeps
//! live instances within the process-wide memory budget.
//!
//! Each Envoy worker thread owns its pools (`thread_local!`, no lock on the request path); only the
//! `Plugin` (engine, module, `InstancePre`) is shared across workers. An instance serves one stream
//! at a time and only ever its own tenant: pools are keyed by the plugin's unique id, so a reloaded
//! config never reuses instances of the old one either.
//!
//! - `per_request`: every request gets a fresh instance, dropped after the stream (its slot goes
//!   back to Wasmtime's pooling allocator). Nothing survives a request.
//! - `pooled`: idle instances are reused for the tenant's next request on this worker, after the
//!   host-side request state is reset; retired after `max_requests`, `max_age_ms` or
//!   `idle_timeout_ms`; at most `max_instances` idle per tenant per worker.
//!
//! Before a fresh instance is created, idle instances of the least recently used tenants on this
//! worker are evicted while the budget would otherwise be exceeded ([`EvictionQueue`]: the order,
//! kept in constant time per request).
//!
//! The time each fresh instance took goes into an Envoy histogram, at most
//! [`LATENCY_SAMPLES_PER_SECOND`] values a second per worker ([`LatencySamples`]).
//!
//! With `cold_starts` configured, each worker also admits the first requests of tenants it has not
//! served within [`COLD_AFTER`] at that rate only ([`admit`]): a token bucket per worker.

use crate::config::{ColdStartLimit, Isolation, TenantId};
use crate::proxy_wasm::host;
use crate::proxy_wasm::{FailureKind, GuestError, GuestInstance, Plugin};
use crate::telemetry::{Metric, StatsSink};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// At most this many fresh-instance times (`wasm_cold_start_microseconds`,
/// `wasm_snapshot_resume_microseconds`) are recorded per worker per second. One value into an
/// Envoy histogram (then labelled by tenant) cost Envoy more than resuming the instance it times:
/// per_request with a snapshot served 6-12% more requests a second without it (`bench/bench.py`'s
/// peer under wrk, paired runs). Below this rate every instance is counted; above it the
/// histograms hold a sample.
pub const LATENCY_SAMPLES_PER_SECOND: u32 = 100;

/// How often a worker sweeps its idle instances for retirement.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A tenant the worker has not served for this long is cold again (its code and data pages, its
/// pooled instances and slots are likely gone by then).
pub const COLD_AFTER: Duration = Duration::from_secs(600);

struct TenantPool {
    plugin: Weak<Plugin>,
    idle: Vec<GuestInstance>,
    /// Worker-local use counter at the tenant's last request.
    last_used: u64,
    /// The stamp of this pool's place in the worker's [`EvictionQueue`].
    queued: u64,
    /// No later than the moment one of the idle instances is due for retirement (`None`: none
    /// is, or none is idle). Taking an instance leaves it as it was (earlier is safe: the sweep
    /// then looks and finds nothing due).
    retire_at: Option<Instant>,
    /// This worker's share of `wasm_instance_pool_size` as last reported to Envoy. The gauge moves
    /// by the difference when instances come back, are evicted or retired, not when one is taken:
    /// a request served from the pool takes its instance and gives it back, a difference of none,
    /// so it costs no gauge update (two through Envoy, about 1.1 us a request, perf). An instance
    /// out serving a request still counts as the pool's; one that never comes back (its guest
    /// failed) is taken off at the tenant's next miss, give-back, eviction or sweep.
    reported: usize,
}

impl TenantPool {
    /// Moves the tenant's gauge by what changed since it was last reported.
    fn report(&mut self, tenant: &TenantId, stats: &mut dyn StatsSink) {
        let idle = self.idle.len();
        if idle != self.reported {
            stats.record(Metric::PoolSize, tenant, idle as i64 - self.reported as i64);
            self.reported = idle;
        }
    }
}

struct WorkerPools {
    tenants: HashMap<u64, TenantPool>,
    eviction: EvictionQueue,
    uses: u64,
    last_sweep: Instant,
    /// [`crate::proxy_wasm::instance::plugins_dropped`] at the last sweep.
    plugins_dropped: u64,
}

/// The worker's tenants in the order their pools were last used (taken from or given back to),
/// least recent first: where eviction looks. An entry is a (stamp, pool uid) pair, valid while it
/// is the pool's latest stamp and the pool holds an idle instance; a pool used again gets a new
/// entry at the back, and its old one goes stale, to be dropped when eviction reaches it or the
/// sweep compacts the queue. So each request costs one push, and eviction pops what it passes.
/// Finding the least recently used tenant by a scan of every pool instead cost a flood of cold
/// pooled tenants 4% of the worker's time (perf, 4,000 idle instances).
struct EvictionQueue {
    entries: VecDeque<(u64, u64)>,
    next_stamp: u64,
}

impl EvictionQueue {
    /// Puts `uid` at the back; the returned stamp is its place, for the pool to remember.
    fn touch(&mut self, uid: u64) -> u64 {
        self.next_stamp += 1;
        self.entries.push_back((self.next_stamp, uid));
        self.next_stamp
    }

    /// The least recently used pool that `valid(uid, stamp)` accepts, stale entries before it
    /// dropped; the entry itself stays (its pool may hold more idle instances).
    fn oldest(&mut self, mut valid: impl FnMut(u64, u64) -> bool) -> Option<u64> {
        while let Some(&(stamp, uid)) = self.entries.front() {
            if valid(uid, stamp) {
                return Some(uid);
            }
            self.entries.pop_front();
        }
        None
    }

    /// Drops stale entries once they outnumber the pools twice over (each request adds one).
    fn compact(&mut self, pools: usize, mut valid: impl FnMut(u64, u64) -> bool) {
        if self.entries.len() > 2 * pools + 64 {
            self.entries.retain(|&(stamp, uid)| valid(uid, stamp));
        }
    }
}

/// Whether `stamp` is the eviction queue's current entry for `pool` and the pool has something to
/// evict.
fn evictable(pool: Option<&TenantPool>, stamp: u64) -> bool {
    pool.is_some_and(|p| p.queued == stamp && !p.idle.is_empty())
}

thread_local! {
    static POOLS: RefCell<WorkerPools> = RefCell::new(WorkerPools {
        tenants: HashMap::new(),
        eviction: EvictionQueue { entries: VecDeque::new(), next_stamp: 0 },
        uses: 0,
        last_sweep: Instant::now(),
        plugins_dropped: 0,
    });
    static WARM: RefCell<WarmTenants> = RefCell::new(WarmTenants { served: HashMap::new(), tokens: 0.0, refilled: None, last_sweep: Instant::now() });
    static LATENCY_SAMPLES: RefCell<LatencySamples> = const { RefCell::new(LatencySamples { window: None, taken: 0 }) };
}

/// This worker's budget of fresh-instance times to record: [`LATENCY_SAMPLES_PER_SECOND`] per
/// one-second window.
struct LatencySamples {
    window: Option<Instant>,
    taken: u32,
}

impl LatencySamples {
    /// Whether a time measured at `now` is recorded.
    fn take(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => (self.window, self.taken) = (Some(now), 0),
        }
        self.taken += 1;
        self.taken <= LATENCY_SAMPLES_PER_SECOND
    }
}

/// The tenants this worker served lately, and its cold-start token bucket.
struct WarmTenants {
    served: HashMap<TenantId, Instant>,
    tokens: f64,
    /// When the bucket was last refilled (`None`: never used, full).
    refilled: Option<Instant>,
    last_sweep: Instant,
}

/// Whether this worker takes a request of `tenant` now under `limit`: always if it served the
/// tenant within [`COLD_AFTER`]; otherwise if a cold-start token is left (then the tenant is warm).
pub fn admit(tenant: &TenantId, limit: ColdStartLimit) -> bool {
    WARM.with(|warm| {
        let mut warm = warm.borrow_mut();
        let now = Instant::now();
        if now.duration_since(warm.last_sweep) >= COLD_AFTER / 10 {
            warm.last_sweep = now;
            warm.served.retain(|_, at| now.duration_since(*at) < COLD_AFTER);
        }
        if let Some(at) = warm.served.get_mut(tenant) {
            if now.duration_since(*at) < COLD_AFTER {
                *at = now;
                return true;
            }
        }
        let burst = f64::from(limit.burst);
        let tokens = match warm.refilled {
            None => burst,
            Some(at) => (warm.tokens + now.duration_since(at).as_secs_f64() * f64::from(limit.per_second)).min(burst),
        };
        warm.refilled = Some(now);
        if tokens < 1.0 {
            warm.tokens = tokens;
            return false;
        }
        warm.tokens = tokens - 1.0;
        warm.served.insert(tenant.clone(), now);
        true
    })
}

/// An instance for one request of `plugin`'s tenant: an idle pooled one, or a fresh one.
pub fn take(plugin: &Arc<Plugin>, stats: &mut dyn StatsSink) -> Result<GuestInstance, GuestError> {
    let tenant = &plugin.tenant;
    let pooled = plugin.policy.isolation == Isolation::Pooled;
    let reused = POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        pools.sweep(stats);
        pools.uses += 1;
        let uses = pools.uses;
        let WorkerPools { tenants, eviction, .. } = &mut *pools;
        let pool = tenants.get_mut(&plugin.uid)?;
        pool.last_used = uses;
        let now = Instant::now();
        while let Some(instance) = pool.idle.pop() {
            if !instance.is_retired(&plugin.policy, now) {
                if !pool.idle.is_empty() {
                    pool.queued = eviction.touch(plugin.uid);
                }
                return Some(instance);
            }
        }
        pool.report(tenant, stats);
        None
    });
    if let Some(instance) = reused {
        stats.record(Metric::PoolHit, tenant, 1);
        return Ok(instance);
    }
    if pooled {
        stats.record(Metric::PoolMiss, tenant, 1);
    }
    make_room(plugin.initial_memory_bytes, stats);
    let started = Instant::now();
    let instance = match plugin.instantiate() {
        // Out of instance slots (or budget): idle instances hold slots too, so a flood of tenants
        // under `pooled` could fill them all and refuse everyone; evict this worker's least
        // recently used idle instances, one at a time, and try again.
        Err(e) if e.kind() == FailureKind::Refused => loop {
            if !evict_lru(stats) {
                return Err(e);
            }
            match plugin.instantiate() {
                Err(e) if e.kind() == FailureKind::Refused => continue,
                other => break other?,
            }
        },
        other => other?,
    };
    let metric = if plugin.is_resumed() { Metric::SnapshotResume } else { Metric::ColdStart };
    if LATENCY_SAMPLES.with(|samples| samples.borrow_mut().take(started)) {
        stats.record(metric, tenant, started.elapsed().as_micros() as i64);
    }
    Ok(instance)
}

/// Ends an instance's request: pooled and healthy instances go back to this worker's pool (if it
/// has room), everything else is dropped.
pub fn give_back(plugin: &Arc<Plugin>, mut instance: GuestInstance, stats: &mut dyn StatsSink) {
    if plugin.policy.isolation != Isolation::Pooled || instance.is_retired(&plugin.policy, Instant::now()) {
        return;
    }
    instance.reset_for_reuse();
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let uses = pools.uses;
        let WorkerPools { tenants, eviction, .. } = &mut *pools;
        let pool = tenants.entry(plugin.uid).or_insert_with(|| TenantPool {
            plugin: Arc::downgrade(plugin),
            idle: Vec::new(),
            last_used: uses,
            queued: 0,
            retire_at: None,
            reported: 0,
        });
        if pool.idle.len() < plugin.policy.max_instances {
            pool.retire_at = pool.retire_at.into_iter().chain(instance.retirement_due(&plugin.policy)).min();
            pool.idle.push(instance);
            pool.queued = eviction.touch(plugin.uid);
        }
        pool.report(&plugin.tenant, stats);
    });
}

/// Evicts idle instances on this worker, least recently used tenant first, until `needed` more
/// bytes fit in the process budget (or nothing idle is left here).
fn make_room(needed: usize, stats: &mut dyn StatsSink) {
    while host::live_bytes().saturating_add(needed) > host::budget_bytes() {
        if !evict_lru(stats) {
            return;
        }
    }
}

/// Evicts the oldest idle instance of this worker's least recently used tenant; false when this
/// worker holds none.
fn evict_lru(stats: &mut dyn StatsSink) -> bool {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let WorkerPools { tenants, eviction, .. } = &mut *pools;
        let Some(uid) = eviction.oldest(|uid, stamp| evictable(tenants.get(&uid), stamp)) else {
            return false;
        };
        let Some(lru) = tenants.get_mut(&uid) else { return false };
        let evicted = lru.idle.remove(0);
        if let Some(plugin) = lru.plugin.upgrade() {
            lru.report(&plugin.tenant, stats);
            stats.record(Metric::InstanceEvicted, &plugin.tenant, 1);
        }
        drop(evicted);
        true
    })
}

impl WorkerPools {
    /// Drops retired idle instances and forgets pools of configs that are gone.
    ///
    /// It runs on the request path, once a second, over every pool of the worker, so it reads
    /// only what each pool holds inline: a pool's plugin and instances are looked at only when
    /// its `retire_at` has come, or when some plugin in the process was dropped since the last
    /// sweep. Looking at each (a `Weak` upgrade, the instances' times) stalled the worker 0.3 ms
    /// at 600 pools and 1.7 ms at 2,300 in a cold pooled flood, once a second (timed in the
    /// sweep).
    fn sweep(&mut self, stats: &mut dyn StatsSink) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = now;
        let dropped = crate::proxy_wasm::instance::plugins_dropped();
        let some_plugin_gone = dropped != self.plugins_dropped;
        self.plugins_dropped = dropped;
        let uses = self.uses;
        self.tenants.retain(|_, pool| {
            if some_plugin_gone && pool.plugin.strong_count() == 0 {
                return false;
            }
            let recent = uses.saturating_sub(pool.last_used) < 1024;
            let due = pool.retire_at.is_some_and(|at| at <= now);
            if !due && (recent || !pool.idle.is_empty()) {
                return true;
            }
            let Some(plugin) = pool.plugin.upgrade() else { return false };
            if due {
                pool.idle.retain(|i| !i.is_retired(&plugin.policy, now));
                pool.retire_at = pool.idle.iter().filter_map(|i| i.retirement_due(&plugin.policy)).min();
            }
            pool.report(&plugin.tenant, stats);
            !pool.idle.is_empty() || recent
        });
        let tenants = &self.tenants;
        self.eviction.compact(tenants.len(), |uid, stamp| evictable(tenants.get(&uid), stamp));
    }
}

/// Idle instances of `plugin` on this worker (for tests and diagnostics).
pub fn idle_count(plugin: &Plugin) -> usize {
    POOLS.with(|pools| pools.borrow().tenants.get(&plugin.uid).map_or(0, |p| p.idle.len()))
}

/// Pools this worker keeps, idle instances or not (for tests and diagnostics).
pub fn pool_count() -> usize {
    POOLS.with(|pools| pools.borrow().tenants.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_records_at_most_the_sample_budget_of_instance_times_a_second() {
        let mut samples = LatencySamples { window: None, taken: 0 };
        let start = Instant::now();
        let recorded = (0..250).filter(|_| samples.take(start)).count();
        assert_eq!(recorded, LATENCY_SAMPLES_PER_SECOND as usize);
        // Within the same second nothing more; the next second has a budget of its own.
        assert!(!samples.take(start + Duration::from_millis(999)));
        assert!(samples.take(start + Duration::from_millis(1000)));
        let next = (0..250).filter(|_| samples.take(start + Duration::from_millis(1500))).count();
        assert_eq!(next, LATENCY_SAMPLES_PER_SECOND as usize - 1);
    }

    #[test]
    fn eviction_finds_the_least_recently_used_pool_and_skips_stale_entries() {
        let mut queue = EvictionQueue { entries: VecDeque::new(), next_stamp: 0 };
        // Pools 1, 2, 3 used in that order, then 1 again: 2 is now the least recently used.
        let mut current: HashMap<u64, u64> = HashMap::new();
        for uid in [1, 2, 3, 1] {
            current.insert(uid, queue.touch(uid));
        }
        let valid = |current: &HashMap<u64, u64>, uid: u64, stamp: u64| current.get(&uid) == Some(&stamp);
        assert_eq!(queue.oldest(|u, s| valid(&current, u, s)), Some(2));
        // Asking again without a change gives the same pool (it may hold more than one instance).
        assert_eq!(queue.oldest(|u, s| valid(&current, u, s)), Some(2));
        // Pool 2 emptied: 3 is next, then 1; 1's stale first entry was passed over, not returned.
        current.remove(&2);
        assert_eq!(queue.oldest(|u, s| valid(&current, u, s)), Some(3));
        current.remove(&3);
        assert_eq!(queue.oldest(|u, s| valid(&current, u, s)), Some(1));
        current.remove(&1);
        assert_eq!(queue.oldest(|u, s| valid(&current, u, s)), None);
        assert!(queue.entries.is_empty());
    }

    #[test]
    fn the_eviction_queue_stays_bounded_by_the_pools_it_orders() {
        let mut queue = EvictionQueue { entries: VecDeque::new(), next_stamp: 0 };
        let mut current: HashMap<u64, u64> = HashMap::new();
        // A million uses of ten pools, compacted as a sweep would.
        for i in 0..1_000_000u64 {
            let uid = i % 10;
            current.insert(uid, queue.touch(uid));
            if i % 1000 == 0 {
                queue.compact(current.len(), |u, s| current.get(&u) == Some(&s));
                assert!(queue.entries.len() <= 2 * 10 + 64 + 1, "{} entries", queue.entries.len());
            }
        }
        queue.compact(current.len(), |u, s| current.get(&u) == Some(&s));
        // Compaction keeps order: the least recently used of the ten is the first one touched last round.
        assert_eq!(queue.oldest(|u, s| current.get(&u) == Some(&s)), Some(0));
    }
}
