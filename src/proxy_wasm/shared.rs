//! Process-wide shared data (key/value with compare-and-swap) and shared queues (with a notification
//! per enqueue for `proxy_on_queue_ready`, see `root`), scoped per tenant:
//! what Envoy scopes per VM id, thaw scopes per tenant, so tenants never see each other's data.
//! Safe across workers (one mutex each, taken only by these hostcalls). Each tenant's shared data
//! and queues are bounded in keys, queues and bytes (`abi::MAX_SHARED_*`, `MAX_QUEUED_BYTES`):
//! they outlive every instance, and no memory cap counts them.

use super::abi::{Status, MAX_QUEUED_BYTES, MAX_SHARED_DATA_BYTES, MAX_SHARED_DATA_KEYS, MAX_SHARED_QUEUES, QUEUE_ITEM_OVERHEAD_BYTES};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Called with a queue id when something is enqueued onto one of a tenant's queues.
pub type Notifier = Arc<dyn Fn(u32) + Send + Sync>;

/// Each tenant's queue watchers, held weakly (a config that is gone stops being notified).
type Watchers = Mutex<HashMap<String, Vec<Weak<dyn Fn(u32) + Send + Sync>>>>;

fn notifiers() -> &'static Watchers {
    static NOTIFIERS: OnceLock<Watchers> = OnceLock::new();
    NOTIFIERS.get_or_init(Default::default)
}

/// Registers `notify` for `tenant`'s queues, for as long as the caller keeps it alive.
pub fn watch_queues(tenant: &str, notify: &Notifier) {
    let mut all = notifiers().lock().unwrap_or_else(|p| p.into_inner());
    let list = all.entry(tenant.to_string()).or_default();
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(notify));
}

/// Tells every live watcher of `tenant` that queue `id` has data (outside every lock).
fn notify(tenant: &str, id: u32) {
    let live: Vec<Notifier> = {
        let mut all = notifiers().lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = all.get_mut(tenant) else { return };
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for n in live {
        n(id);
    }
}

type Key = (String, Vec<u8>);

/// What one tenant holds (shared-data keys or queues, and their bytes), against its bounds.
#[derive(Default, Clone, Copy)]
struct Usage {
    entries: usize,
    bytes: usize,
}

/// Shared data: each key's value and its compare-and-swap token, and each tenant's usage.
#[derive(Default)]
struct Data {
    values: HashMap<Key, (Vec<u8>, u32)>,
    usage: HashMap<String, Usage>,
}

fn data() -> &'static Mutex<Data> {
    static DATA: OnceLock<Mutex<Data>> = OnceLock::new();
    DATA.get_or_init(Default::default)
}

/// The value of `key` and its CAS token.
pub fn get(tenant: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
    let data = data().lock().unwrap_or_else(|p| p.into_inner());
    data.values.get(&(tenant.to_string(), key.to_vec())).cloned().ok_or(Status::NotFound)
}

/// Sets `key`; with a non-zero `cas`, only if the stored token still equals it (a new key ignores
/// the CAS, as Envoy's host). BAD_ARGUMENT past the tenant's bounds.
pub fn set(tenant: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
    let mut data = data().lock().unwrap_or_else(|p| p.into_inner());
    let Data { values, usage } = &mut *data;
    let used = usage.entry(tenant.to_string()).or_default();
    match values.get_mut(&(tenant.to_string(), key.to_vec())) {
        Some(entry) => {
            if cas != 0 && entry.1 != cas {
                return Err(Status::CasMismatch);
            }
            let bytes = used.bytes - entry.0.len() + value.len();
            if bytes > MAX_SHARED_DATA_BYTES {
                return Err(Status::BadArgument);
            }
            used.bytes = bytes;
            entry.0 = value.to_vec();
            entry.1 = entry.1.wrapping_add(1).max(1);
        }
        None => {
            let bytes = used.bytes + key.len() + value.len();
            if used.entries >= MAX_SHARED_DATA_KEYS || bytes > MAX_SHARED_DATA_BYTES {
                return Err(Status::BadArgument);
            }
            *used = Usage { entries: used.entries + 1, bytes };
            values.insert((tenant.to_string(), key.to_vec()), (value.to_vec(), 1));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Queues {
    ids: HashMap<Key, u32>,
    queues: HashMap<u32, Queue>,
    next: u32,
    /// Per tenant: its queues, and the bytes of their names and items.
    usage: HashMap<String, Usage>,
}

struct Queue {
    owner: String,
    items: VecDeque<Vec<u8>>,
    /// A root context registered it: enqueues notify the tenant's root (`proxy_on_queue_ready`).
    /// Queues registered only from HTTP contexts notify no one, as their registrant is gone.
    notify_root: bool,
}

fn queues() -> &'static Mutex<Queues> {
    static QUEUES: OnceLock<Mutex<Queues>> = OnceLock::new();
    QUEUES.get_or_init(Default::default)
}

/// Registers (or finds) the tenant's queue `name`; returns its id. `from_root`: the registrant is
/// a root context (init, tick), which then gets `proxy_on_queue_ready`. BAD_ARGUMENT for a new
/// queue past the tenant's bounds.
pub fn register_queue(tenant: &str, name: &[u8], from_root: bool) -> Result<u32, Status> {
    let mut guard = queues().lock().unwrap_or_else(|p| p.into_inner());
    let q = &mut *guard;
    let key = (tenant.to_string(), name.to_vec());
    let id = match q.ids.get(&key) {
        Some(id) => *id,
        None => {
            let used = q.usage.entry(tenant.to_string()).or_default();
            let bytes = used.bytes + name.len();
            if used.entries >= MAX_SHARED_QUEUES || bytes > MAX_QUEUED_BYTES {
                return Err(Status::BadArgument);
            }
            *used = Usage { entries: used.entries + 1, bytes };
            q.next += 1;
            let id = q.next;
            q.ids.insert(key, id);
            q.queues.insert(id, Queue { owner: tenant.to_string(), items: VecDeque::new(), notify_root: false });
            id
        }
    };
    if let Some(queue) = q.queues.get_mut(&id) {
        queue.notify_root |= from_root;
    }
    Ok(id)
}

/// The id of queue `name` of VM `vm_id`: only the tenant's own queues resolve.
pub fn resolve_queue(tenant: &str, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
    if !vm_id.is_empty() && vm_id != tenant.as_bytes() {
        return Err(Status::NotFound);
    }
    let q = queues().lock().unwrap_or_else(|p| p.into_inner());
    q.ids.get(&(tenant.to_string(), name.to_vec())).copied().ok_or(Status::NotFound)
}

/// Enqueues onto the tenant's queue `id` and notifies its watchers (`proxy_on_queue_ready`).
pub fn enqueue(tenant: &str, id: u32, value: &[u8]) -> Result<(), Status> {
    let notify_root = {
        let mut guard = queues().lock().unwrap_or_else(|p| p.into_inner());
        let q = &mut *guard;
        match q.queues.get_mut(&id) {
            Some(queue) if queue.owner == tenant => {
                let used = q.usage.entry(tenant.to_string()).or_default();
                let bytes = used.bytes + value.len() + QUEUE_ITEM_OVERHEAD_BYTES;
                if bytes > MAX_QUEUED_BYTES {
                    return Err(Status::BadArgument);
                }
                used.bytes = bytes;
                queue.items.push_back(value.to_vec());
                queue.notify_root
            }
            _ => return Err(Status::NotFound),
        }
    };
    if notify_root {
        notify(tenant, id);
    }
    Ok(())
}

pub fn dequeue(tenant: &str, id: u32) -> Result<Vec<u8>, Status> {
    let mut guard = queues().lock().unwrap_or_else(|p| p.into_inner());
    let q = &mut *guard;
    match q.queues.get_mut(&id) {
        Some(queue) if queue.owner == tenant => {
            let item = queue.items.pop_front().ok_or(Status::Empty)?;
            if let Some(used) = q.usage.get_mut(tenant) {
                used.bytes -= item.len() + QUEUE_ITEM_OVERHEAD_BYTES;
            }
            Ok(item)
        }
        _ => Err(Status::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_compare_and_swap_and_tenant_scope() {
        assert_eq!(get("a-cas", b"k"), Err(Status::NotFound));
        set("a-cas", b"k", b"1", 0).unwrap();
        let (v, cas) = get("a-cas", b"k").unwrap();
        assert_eq!(v, b"1");
        set("a-cas", b"k", b"2", cas).unwrap();
        assert_eq!(set("a-cas", b"k", b"3", cas), Err(Status::CasMismatch));
        assert_eq!(get("b-cas", b"k"), Err(Status::NotFound));
    }

    #[test]
    fn a_new_key_ignores_the_cas_and_a_mismatch_leaves_no_key() {
        set("n-cas", b"new", b"v", 42).unwrap();
        assert_eq!(get("n-cas", b"new").unwrap(), (b"v".to_vec(), 1));
        assert_eq!(set("n-cas", b"new", b"w", 42), Err(Status::CasMismatch));
        assert_eq!(get("n-cas", b"new").unwrap().0, b"v");
    }

    /// The hostcall fuzzer's finding: shared data and queues grew without bound (RELIABILITY.md).
    #[test]
    fn shared_data_and_queues_are_bounded_per_tenant() {
        let big = vec![7u8; 1024 * 1024];
        let mut n = 0usize;
        while set("bound-d", &n.to_le_bytes(), &big, 0).is_ok() {
            n += 1;
        }
        assert_eq!(set("bound-d", &n.to_le_bytes(), &big, 0), Err(Status::BadArgument));
        assert!(n * big.len() <= MAX_SHARED_DATA_BYTES && (n + 1) * (big.len() + 4) > MAX_SHARED_DATA_BYTES, "{n} values");
        // Replacing a value with a smaller one frees room; another tenant is not affected.
        set("bound-d", &0usize.to_le_bytes(), b"", 0).unwrap();
        set("bound-d", &n.to_le_bytes(), &big[..1000], 0).unwrap();
        set("bound-other", b"k", &big, 0).unwrap();
        let mut keys = 0usize;
        while set("bound-k", &keys.to_le_bytes(), b"", 0).is_ok() {
            keys += 1;
        }
        assert_eq!(keys, MAX_SHARED_DATA_KEYS);

        let mut queues = 0usize;
        while register_queue("bound-q", &queues.to_le_bytes(), false).is_ok() {
            queues += 1;
        }
        assert_eq!(queues, MAX_SHARED_QUEUES);
        let id = register_queue("bound-q", &0usize.to_le_bytes(), false).unwrap();
        let mut items = 0usize;
        while enqueue("bound-q", id, &big).is_ok() {
            items += 1;
        }
        assert!(items > 0 && items * big.len() <= MAX_QUEUED_BYTES, "{items} items");
        assert_eq!(enqueue("bound-q", id, &big), Err(Status::BadArgument));
        dequeue("bound-q", id).unwrap();
        enqueue("bound-q", id, &big).unwrap();
    }

    #[test]
    fn queues_belong_to_their_tenant() {
        let id = register_queue("a-q", b"jobs", false).unwrap();
        assert_eq!(register_queue("a-q", b"jobs", true), Ok(id));
        assert_eq!(resolve_queue("a-q", b"", b"jobs"), Ok(id));
        assert_eq!(resolve_queue("b-q", b"a-q", b"jobs"), Err(Status::NotFound));
        assert_eq!(dequeue("a-q", id), Err(Status::Empty));
        enqueue("a-q", id, b"x").unwrap();
        assert_eq!(enqueue("b-q", id, b"y"), Err(Status::NotFound));
        assert_eq!(dequeue("a-q", id).unwrap(), b"x");
    }
}
