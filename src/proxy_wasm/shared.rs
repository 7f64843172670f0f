//! Process-wide shared data (key/value with compare-and-swap) and shared queues, scoped per tenant:
//! what Envoy scopes per VM id, thaw scopes per tenant, so tenants never see each other's data.
//! Safe across workers (one mutex each, taken only by these hostcalls).

use super::abi::Status;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

type Key = (String, Vec<u8>);

fn data() -> &'static Mutex<HashMap<Key, (Vec<u8>, u32)>> {
    static DATA: OnceLock<Mutex<HashMap<Key, (Vec<u8>, u32)>>> = OnceLock::new();
    DATA.get_or_init(Default::default)
}

/// The value of `key` and its CAS token.
pub fn get(tenant: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
    let data = data().lock().unwrap_or_else(|p| p.into_inner());
    data.get(&(tenant.to_string(), key.to_vec())).cloned().ok_or(Status::NotFound)
}

/// Sets `key`; with a non-zero `cas`, only if the stored token still equals it.
pub fn set(tenant: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
    let mut data = data().lock().unwrap_or_else(|p| p.into_inner());
    let entry = data.entry((tenant.to_string(), key.to_vec())).or_insert_with(|| (Vec::new(), 0));
    if cas != 0 && entry.1 != cas {
        return Err(Status::CasMismatch);
    }
    entry.0 = value.to_vec();
    entry.1 = entry.1.wrapping_add(1).max(1);
    Ok(())
}

#[derive(Default)]
struct Queues {
    ids: HashMap<Key, u32>,
    queues: HashMap<u32, (String, VecDeque<Vec<u8>>)>,
    next: u32,
}

fn queues() -> &'static Mutex<Queues> {
    static QUEUES: OnceLock<Mutex<Queues>> = OnceLock::new();
    QUEUES.get_or_init(Default::default)
}

/// Registers (or finds) the tenant's queue `name`; returns its id.
pub fn register_queue(tenant: &str, name: &[u8]) -> u32 {
    let mut q = queues().lock().unwrap_or_else(|p| p.into_inner());
    let key = (tenant.to_string(), name.to_vec());
    if let Some(id) = q.ids.get(&key) {
        return *id;
    }
    q.next += 1;
    let id = q.next;
    q.ids.insert(key, id);
    q.queues.insert(id, (tenant.to_string(), VecDeque::new()));
    id
}

/// The id of queue `name` of VM `vm_id`: only the tenant's own queues resolve.
pub fn resolve_queue(tenant: &str, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
    if !vm_id.is_empty() && vm_id != tenant.as_bytes() {
        return Err(Status::NotFound);
    }
    let q = queues().lock().unwrap_or_else(|p| p.into_inner());
    q.ids.get(&(tenant.to_string(), name.to_vec())).copied().ok_or(Status::NotFound)
}

pub fn enqueue(tenant: &str, id: u32, value: &[u8]) -> Result<(), Status> {
    let mut q = queues().lock().unwrap_or_else(|p| p.into_inner());
    match q.queues.get_mut(&id) {
        Some((owner, queue)) if owner == tenant => {
            queue.push_back(value.to_vec());
            Ok(())
        }
        _ => Err(Status::NotFound),
    }
}

pub fn dequeue(tenant: &str, id: u32) -> Result<Vec<u8>, Status> {
    let mut q = queues().lock().unwrap_or_else(|p| p.into_inner());
    match q.queues.get_mut(&id) {
        Some((owner, queue)) if owner == tenant => queue.pop_front().ok_or(Status::Empty),
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
    fn queues_belong_to_their_tenant() {
        let id = register_queue("a-q", b"jobs");
        assert_eq!(register_queue("a-q", b"jobs"), id);
        assert_eq!(resolve_queue("a-q", b"", b"jobs"), Ok(id));
        assert_eq!(resolve_queue("b-q", b"a-q", b"jobs"), Err(Status::NotFound));
        assert_eq!(dequeue("a-q", id), Err(Status::Empty));
        enqueue("a-q", id, b"x").unwrap();
        assert_eq!(enqueue("b-q", id, b"y"), Err(Status::NotFound));
        assert_eq!(dequeue("a-q", id).unwrap(), b"x");
    }
}
