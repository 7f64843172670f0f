//! Bounds-checked access to a guest's linear memory, and handing bytes to the guest through its
//! allocator. Every guest pointer and length goes through here; an out-of-bounds one becomes
//! `INVALID_MEMORY_ACCESS` for the guest, never a host fault.

use super::abi::Status;
use super::host::{GuestMemory, HostState};
use crate::stream::HeaderPair;
use wasmtime::Caller;

/// How a hostcall ends when it does not succeed: a status for the guest, or a trap.
#[derive(Debug)]
pub enum HostError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for HostError {
    fn from(s: Status) -> HostError {
        HostError::Status(s)
    }
}

pub type HostResult<T = ()> = Result<T, HostError>;

/// The guest's memory and allocator, set right after instantiation, before any guest code that
/// could call the host runs. Borrowed: every hostcall reaches it (a clone of the allocator's typed
/// function costs a type-registry reference count each time).
fn guest<'a>(caller: &'a Caller<'_, HostState>) -> HostResult<&'a GuestMemory> {
    caller.data().memory.as_ref().ok_or(HostError::Status(Status::InternalFailure))
}

fn range(ptr: i32, len: usize, memory_size: usize) -> HostResult<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    if end > memory_size {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory; INVALID_MEMORY_ACCESS unless all of them are
/// inside it (Envoy's host checks `ptr + len <= memory size` and nothing else: a huge length is
/// out of bounds, not a bad argument). What can be read is bounded by the instance's memory cap.
pub fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let memory = guest(caller)?.memory;
    let data = memory.data(caller);
    Ok(data[range(ptr, len as u32 as usize, data.len())?].to_vec())
}

/// Reads a serialized header map the guest sends (`len` bytes at `ptr`), as Envoy's host reads it:
/// out-of-bounds bytes are INVALID_MEMORY_ACCESS; a malformed, oversized or overlong map is empty
/// (`header_map::decode_lenient`), not an error. Every header map a guest hands the host is read
/// here.
pub fn read_header_map(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> HostResult<Vec<HeaderPair>> {
    Ok(super::header_map::decode_lenient(&read(caller, ptr, len)?))
}

pub fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> HostResult {
    let memory = guest(caller)?.memory;
    let data = memory.data_mut(caller);
    let r = range(ptr, bytes.len(), data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: i32, value: u64) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Checks that `len` bytes at `ptr` are inside guest memory, without reading or writing them
/// (to fail before allocating, or before copying).
pub fn check_in_bounds(caller: &Caller<'_, HostState>, ptr: i32, len: usize) -> HostResult {
    let memory = guest(caller)?.memory;
    range(ptr, len, memory.data_size(caller)).map(drop)
}

/// Hands `bytes` to the guest: allocates with the guest's allocator, copies, and stores the
/// pointer at `ptr_out` and the length at `len_out`. Empty bytes are returned as (NULL, 0), which
/// every SDK reads as an empty value.
pub fn return_bytes(caller: &mut Caller<'_, HostState>, bytes: &[u8], ptr_out: i32, len_out: i32) -> HostResult {
    check_in_bounds(caller, ptr_out, 4)?;
    check_in_bounds(caller, len_out, 4)?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        let allocate = guest(caller)?.allocate.clone();
        let len = i32::try_from(bytes.len()).map_err(|_| Status::BadArgument)?;
        let ptr = allocate.call(&mut *caller, len).map_err(HostError::Trap)?;
        if ptr == 0 {
            return Err(HostError::Trap(wasmtime::Error::msg("the guest allocator returned NULL")));
        }
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ptr_out, ptr as u32)?;
    write_u32(caller, len_out, bytes.len() as u32)
}
