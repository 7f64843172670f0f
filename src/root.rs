//! Root contexts on Envoy's main thread: ticks (`proxy_set_tick_period_milliseconds` /
//! `proxy_on_tick`) and queue notifications (`proxy_on_queue_ready`).
//!
//! Each tenant gets, when first needed, one root instance on the main thread. A ticker thread, and
//! any worker that enqueues onto a tenant's shared queue, ask Envoy (through the config-level
//! scheduler) to run the event there. Ticks therefore run once per tenant per period, not once per
//! worker (Envoy's Wasm filter ticks each worker's VM): what they build reaches request instances
//! through shared data and queues. A failing root call discards the root instance (the next event
//! makes a new one) and is counted.
//!
//! Root instances run their init with the filter config's callouts at hand, so HTTP calls made
//! during init are sent and answered here. For a tenant whose init makes calls, thaw makes its
//! root instance right after the config is created and records those calls and their answers:
//! once none is outstanding, the transcript is the tenant's readiness (`proxy_wasm::init_calls`).

use crate::config::TenantId;
use crate::log_at;
use crate::proxy_wasm::init_calls::{CallRequest, Readiness, Transcript};
use crate::proxy_wasm::{grpc, shared};
use crate::proxy_wasm::{GuestInstance, Plugin, Subject};
use crate::stream::{CallError, CallResponse, Callouts, HeaderPair};
use crate::telemetry::StatsSink;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the ticker thread looks for due ticks.
const TICKER_RESOLUTION: Duration = Duration::from_millis(5);

/// Asks Envoy to run an event on the main thread; callable from any thread.
pub type Commit = Arc<dyn Fn(u64) + Send + Sync>;

/// What root contexts need of a tenant; the filter config supplies it (`FilterConfig::root_tenants`).
pub struct TenantRoot {
    pub id: TenantId,
    pub plugin: Arc<Plugin>,
    /// The tick period the guest's init set (0: no ticks).
    pub tick_period_ms: u64,
    /// Run on the main thread once the tenant's init calls are all answered, before it is ready
    /// (a snapshot, when configured, is taken then).
    pub on_init_answered: OnInitAnswered,
}

/// See [`TenantRoot::on_init_answered`].
pub type OnInitAnswered = Box<dyn Fn(&Arc<Transcript>)>;

struct RootTenant {
    id: TenantId,
    plugin: Arc<Plugin>,
    on_init_answered: OnInitAnswered,
    root: RefCell<Option<GuestInstance>>,
    period_ms: Arc<AtomicU64>,
    /// Registered with `shared` for this tenant's queues (kept alive here).
    _queue_notifier: shared::Notifier,
    /// While the tenant's init calls are being answered: what is recorded so far.
    init: RefCell<Option<InitRecording>>,
}

/// The calls a tenant's root instance made during init and the answers so far.
struct InitRecording {
    readiness: Readiness,
    transcript: Transcript,
    /// Envoy callout id -> index in `transcript.calls`, for calls not answered yet.
    outstanding: HashMap<u64, usize>,
    /// Root instances that failed during init so far (the next try waits longer).
    failures: u32,
}

/// The most tries at a tenant's init before it is left not ready (logged, counted each time).
const MAX_INIT_TRIES: u32 = 8;

/// The event that makes a tenant's root instance (and so runs its init calls): queue ids count up
/// from 1 and 0 is a tick.
const INIT_EVENT: u32 = u32::MAX;

pub struct RootContexts {
    /// Asks Envoy to run an event on the main thread (init retries use it).
    commit: Commit,
    tenants: Vec<RootTenant>,
    /// Which tenant's root instance started each outstanding Envoy callout and call stream (the
    /// filter config's ids are shared by its tenants): where its answer goes. What a call is and
    /// what it delivered so far is the instance's own (`proxy_wasm::host::Calls`).
    routes: RefCell<HashMap<Callout, usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Write-locked when dropping: no notifier commits after that.
    alive: Arc<RwLock<bool>>,
}

/// Events carry the tenant's index in the high half and the queue id in the low half (0: a tick).
fn event(index: usize, queue: u32) -> u64 {
    ((index as u64) << 32) | queue as u64
}

impl RootContexts {
    /// Starts root contexts for `tenants`: the ticker thread for those with a tick period, queue
    /// notifications for all. `commit(event)` asks Envoy to call `run(event)` on the main thread.
    pub fn start(tenants: Vec<TenantRoot>, commit: Commit) -> RootContexts {
        let alive = Arc::new(RwLock::new(true));
        let tenants: Vec<RootTenant> = tenants
            .into_iter()
            .enumerate()
            .map(|(index, t)| {
                let id = &t.id;
                let (commit, alive) = (Arc::clone(&commit), Arc::clone(&alive));
                let notifier: shared::Notifier = Arc::new(move |queue: u32| {
                    // Holding the read lock: the config cannot finish dropping mid-commit.
                    if *alive.read().unwrap_or_else(|p| p.into_inner()) {
                        commit(event(index, queue));
                    }
                });
                shared::watch_queues(id.as_str(), &notifier);
                let init = t.plugin.readiness.as_ref().filter(|r| r.get().is_none()).map(|readiness| InitRecording {
                    readiness: Arc::clone(readiness),
                    transcript: Transcript::default(),
                    outstanding: HashMap::new(),
                    failures: 0,
                });
                RootTenant {
                    id: t.id,
                    plugin: t.plugin,
                    on_init_answered: t.on_init_answered,
                    root: RefCell::new(None),
                    period_ms: Arc::new(AtomicU64::new(t.tick_period_ms)),
                    _queue_notifier: notifier,
                    init: RefCell::new(init),
                }
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = tenants.iter().filter(|t| t.period_ms.load(Ordering::Relaxed) > 0).count();
        let thread = (ticking > 0).then(|| {
            let periods: Vec<Arc<AtomicU64>> = tenants.iter().map(|t| Arc::clone(&t.period_ms)).collect();
            let stop = Arc::clone(&stop);
            let commit = Arc::clone(&commit);
            std::thread::Builder::new()
                .name("thaw-ticker".into())
                .spawn(move || ticker(&periods, &stop, commit))
                .expect("spawning the ticker thread")
        });
        if ticking > 0 {
            log_at!(Info, "thaw: ticking {ticking} tenants on the main thread");
        }
        for (index, tenant) in tenants.iter().enumerate() {
            if tenant.init.borrow().is_some() {
                commit(event(index, INIT_EVENT));
            }
        }
        RootContexts { commit: Arc::clone(&commit), tenants, routes: RefCell::new(HashMap::new()), stop, thread, alive }
    }

    /// Runs an event on the main thread: a tick, a queue notification, or making a tenant's root
    /// instance (its init's calls). `callouts` makes the filter config's callouts, which the root
    /// instance's calls go through.
    pub fn run(&self, event: u64, stats: &mut dyn StatsSink, callouts: &dyn Fn() -> Box<dyn Callouts>) {
        let (index, queue) = ((event >> 32) as usize, event as u32);
        self.with_root(index, stats, callouts, queue == INIT_EVENT, |instance, callouts| {
            if queue == INIT_EVENT {
                Ok(())
            } else if queue == 0 {
                instance.on_tick(callouts).map(|period| {
                    if let Some(t) = self.tenants.get(index) {
                        t.period_ms.store(period, Ordering::Relaxed)
                    }
                })
            } else {
                instance.on_queue_ready(callouts, queue)
            }
        });
    }

    /// The response of an HTTP call a root instance started (main thread); `None`: it failed.
    pub fn on_http_call_response(
        &self,
        callout_id: u64,
        response: Option<CallResponse>,
        stats: &mut dyn StatsSink,
        callouts: &dyn Fn() -> Box<dyn Callouts>,
    ) {
        let Some(index) = self.routes.borrow_mut().remove(&Callout::Http(callout_id)) else { return };
        // An answer to an init call: what the root instance does with it is still init.
        let init_answer = self
            .tenants
            .get(index)
            .is_some_and(|tenant| tenant.init.borrow_mut().as_mut().is_some_and(|init| init.answered(callout_id, &response)));
        self.with_root(index, stats, callouts, init_answer, |instance, callouts| {
            instance.on_http_call_response(Subject::Root(callouts), callout_id, response)
        });
    }

    /// An event of a call stream a root instance's gRPC call or stream started (main thread):
    /// the root instance's registry of calls says what it delivers, each delivered in turn.
    /// `callouts` makes what each delivery may ask of Envoy.
    pub fn on_call_stream(
        &self,
        id: u64,
        event: grpc::CallStreamEvent,
        stats: &mut dyn StatsSink,
        callouts: &dyn Fn() -> Box<dyn Callouts>,
    ) {
        let ends = matches!(event, grpc::CallStreamEvent::Complete | grpc::CallStreamEvent::Reset);
        let index = {
            let mut routes = self.routes.borrow_mut();
            let route = if ends { routes.remove(&Callout::Stream(id)) } else { routes.get(&Callout::Stream(id)).copied() };
            let Some(index) = route else { return };
            index
        };
        let Some(tenant) = self.tenants.get(index) else { return };
        let deliveries = tenant.root.borrow_mut().as_mut().map(|root| root.call_stream_event(id, event)).unwrap_or_default();
        for delivery in deliveries {
            self.with_root(index, stats, callouts, false, |instance, c| instance.on_grpc(Subject::Root(c), id, delivery));
        }
    }

    /// Runs `call` on tenant `index`'s root instance (made first if needed, its init calls sent
    /// through `callouts`), remembering the HTTP calls and call streams it starts; a failure discards the instance and
    /// is counted. While the tenant's init calls are being recorded, the calls the instance makes
    /// while being made, and those `call` makes when `init_phase` (it delivers an init answer),
    /// are init calls; a tick's or a queue's are not.
    fn with_root(
        &self,
        index: usize,
        stats: &mut dyn StatsSink,
        callouts: &dyn Fn() -> Box<dyn Callouts>,
        init_phase: bool,
        call: impl FnOnce(&mut GuestInstance, Box<dyn Callouts>) -> Result<(), crate::proxy_wasm::GuestError>,
    ) {
        let Some(tenant) = self.tenants.get(index) else { return };
        let mut root = tenant.root.borrow_mut();
        let started = Rc::new(RefCell::new(Started::default()));
        let recording = || Box::new(Recording { inner: callouts(), started: Rc::clone(&started) }) as Box<dyn Callouts>;
        if root.is_none() {
            if let Some(init) = tenant.init.borrow_mut().as_mut() {
                // A new root instance runs init afresh: record its calls, not an earlier one's.
                init.restart();
            }
            match tenant.plugin.instantiate_as_root(&recording) {
                Ok(instance) => *root = Some(instance),
                Err(e) => {
                    log_at!(Error, "thaw: tenant `{}`: cannot create its root instance: {e}", tenant.id);
                    stats.record(e.kind().metric(), &tenant.id, 1);
                    self.retry_init(index);
                    return;
                }
            }
        }
        let made_by_init = started.borrow().http.len();
        let instance = root.as_mut().expect("created above");
        let result = call(instance, recording());
        let started = started.borrow();
        self.routes.borrow_mut().extend(started.http.iter().map(|(id, _)| (Callout::Http(*id), index)));
        let mut init = tenant.init.borrow_mut();
        if let Some(recording) = init.as_mut() {
            let init_calls = if init_phase { &started.http[..] } else { &started.http[..made_by_init] };
            for (id, request) in init_calls {
                recording.made(*id, request.clone());
            }
            if result.is_ok() && recording.outstanding.is_empty() {
                let transcript = Arc::new(std::mem::take(&mut recording.transcript));
                // A snapshot (when configured) is taken now, before the tenant is ready.
                (tenant.on_init_answered)(&transcript);
                let _ = recording.readiness.set(Arc::clone(&transcript));
                *init = None;
                log_at!(Info, "thaw: tenant `{}`: ready ({} init calls answered)", tenant.id, transcript.calls.len());
            }
        }
        drop(init);
        self.routes.borrow_mut().extend(started.streams.iter().map(|id| (Callout::Stream(*id), index)));
        if let Err(e) = result {
            log_at!(Error, "thaw: {e} (root context)");
            stats.record(e.kind().metric(), &tenant.id, 1);
            *root = None;
            if tenant.init.borrow().is_some() {
                self.retry_init(index);
            }
        }
    }

    /// A tenant's root instance failed before its init calls were all answered: try again later
    /// (100 ms, doubling, at most `MAX_INIT_TRIES` tries); the tenant stays not ready meanwhile.
    fn retry_init(&self, index: usize) {
        let Some(tenant) = self.tenants.get(index) else { return };
        let mut init = tenant.init.borrow_mut();
        let Some(recording) = init.as_mut() else { return };
        recording.failures += 1;
        if recording.failures >= MAX_INIT_TRIES {
            log_at!(
                Error,
                "thaw: tenant `{}`: its init failed {} times; it stays not ready (requests answered per on_error)",
                tenant.id,
                recording.failures
            );
            return;
        }
        let wait = Duration::from_millis(100u64 << recording.failures.min(7));
        log_at!(Warn, "thaw: tenant `{}`: retrying its init in {} ms", tenant.id, wait.as_millis());
        let (commit, alive) = (Arc::clone(&self.commit), Arc::clone(&self.alive));
        let spawned = std::thread::Builder::new().name("thaw-init-retry".into()).spawn(move || {
            std::thread::sleep(wait);
            // Holding the read lock: the config cannot finish dropping mid-commit.
            if *alive.read().unwrap_or_else(|p| p.into_inner()) {
                commit(event(index, INIT_EVENT));
            }
        });
        if let Err(e) = spawned {
            log_at!(Error, "thaw: tenant `{}`: cannot schedule its init retry: {e}", tenant.id);
        }
    }
}

impl InitRecording {
    fn restart(&mut self) {
        self.transcript = Transcript::default();
        self.outstanding.clear();
    }

    /// The root instance made an HTTP call during init (or while delivering an init answer).
    fn made(&mut self, id: u64, request: CallRequest) {
        self.outstanding.insert(id, self.transcript.calls.len());
        self.transcript.calls.push((request, None));
    }

    /// The answer to one of them arrived; false when `id` is not an outstanding init call.
    fn answered(&mut self, id: u64, response: &Option<CallResponse>) -> bool {
        let Some(index) = self.outstanding.remove(&id) else { return false };
        self.transcript.calls[index].1 = response.clone();
        self.transcript.arrival.push(index);
        true
    }
}

/// An Envoy callout or call stream of the filter config, by its Envoy id (kept apart by kind: the
/// two may share ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Callout {
    Http(u64),
    Stream(u64),
}

/// What a root call started: HTTP callouts (id, request), and call streams (id).
#[derive(Default)]
struct Started {
    http: Vec<(u64, CallRequest)>,
    streams: Vec<u64>,
}

/// The filter config's callouts, remembering the calls they start, so their answers find their
/// tenant (and a tenant's init calls are recorded).
struct Recording {
    inner: Box<dyn Callouts>,
    started: Rc<RefCell<Started>>,
}

impl Callouts for Recording {
    fn http_call(&mut self, cluster: &[u8], headers: &[HeaderPair], body: &[u8], timeout_ms: u64) -> Result<u64, CallError> {
        let id = self.inner.http_call(cluster, headers, body, timeout_ms)?;
        let request = CallRequest { cluster: cluster.to_vec(), headers: headers.to_vec(), body: body.to_vec() };
        self.started.borrow_mut().http.push((id, request));
        Ok(id)
    }

    fn start_call_stream(
        &mut self,
        cluster: &[u8],
        headers: &[HeaderPair],
        body: &[u8],
        end_stream: bool,
        timeout_ms: u64,
    ) -> Result<u64, CallError> {
        let id = self.inner.start_call_stream(cluster, headers, body, end_stream, timeout_ms)?;
        self.started.borrow_mut().streams.push(id);
        Ok(id)
    }

    fn send_call_stream(&mut self, id: u64, data: &[u8], end_stream: bool) -> bool {
        self.inner.send_call_stream(id, data, end_stream)
    }

    fn reset_call_stream(&mut self, id: u64) {
        self.inner.reset_call_stream(id)
    }
}

impl Drop for RootContexts {
    /// Stops every committer (ticker thread, queue notifiers) before what they commit to goes away.
    fn drop(&mut self) {
        *self.alive.write().unwrap_or_else(|p| p.into_inner()) = false;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ticker(periods: &[Arc<AtomicU64>], stop: &AtomicBool, commit: Commit) {
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
                commit(event(i, 0));
                due[i] = Some(now + Duration::from_millis(period));
            }
        }
    }
}
