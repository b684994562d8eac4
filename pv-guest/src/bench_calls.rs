//! The system calls only the benchmark makes (`pv-guest/user/src/bin/bench.rs`): each runs one
//! platform mechanism in a loop with nothing else around it, or reads xen-lite's counters.

use hypercall_abi::hypercall::{Errno, Hypercall, Stats};
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE};
use hypercall_abi::page_table::{ENTRIES, PRESENT};

use crate::page_tables::DirectMap;
use crate::platform::{self, PteWrite};

/// `pte_updates(batch, rounds)`: a scratch level-1 table (pinned, so `pv` validation applies)
/// gets its first `batch` entries rewritten `rounds` times, each round one
/// [`platform::set_ptes`] batch mapping a scratch data frame read-only; then everything is
/// released.
pub fn pte_updates(pte_base: u64, batch: u64, rounds: u64) -> Result<u64, Errno> {
    if batch == 0 || batch > ENTRIES as u64 {
        return Err(Errno::EINVAL);
    }
    let tables = DirectMap::new(pte_base);
    let table = crate::frames::alloc().ok_or(Errno::ENOMEM)?;
    let Some(data) = crate::frames::alloc() else {
        crate::frames::free(table);
        return Err(Errno::ENOMEM);
    };
    // SAFETY: a frame just allocated, reachable and writable in the kernel's direct map.
    unsafe { core::ptr::write_bytes(gfn_to_va(table) as *mut u8, 0, PAGE_SIZE as usize) };
    let mut result = platform::make_page_table(table)
        .and_then(|()| platform::pin_table(1, tables.machine(table)));
    if result.is_ok() {
        let writes: [PteWrite; ENTRIES] = core::array::from_fn(|i| PteWrite {
            slot: tables.machine(table) + i as u64 * 8,
            entry: tables.machine(data) | PRESENT,
        });
        for _ in 0..rounds {
            if let Err(errno) = platform::set_ptes(&writes[..batch as usize]) {
                result = Err(errno);
                break;
            }
        }
        let clear: [PteWrite; ENTRIES] =
            core::array::from_fn(|i| PteWrite { slot: writes[i].slot, entry: 0 });
        let _ = platform::set_ptes(&clear[..batch as usize]);
        let _ = platform::unpin_table(tables.machine(table));
    }
    let _ = platform::release_page_table(table);
    crate::frames::free(table);
    crate::frames::free(data);
    result.map(|()| batch * rounds)
}

/// `null_hypercalls(n)`: `n` `xen_version` hypercalls in a row.
pub fn null_hypercalls(n: u64) -> Result<u64, Errno> {
    for _ in 0..n {
        let result = platform::hypercall(Hypercall::XenVersion as u64, [0; 5]);
        if let Some(errno) = Errno::from_return(result) {
            return Err(errno);
        }
    }
    Ok(n)
}

/// `hvstats(buf, len)`: xen-lite's counters for this domain, as the bytes the user's buffer
/// gets (`Stats::to_words`, little-endian).
pub fn hvstats() -> Result<[u8; Stats::WORDS * 8], Errno> {
    let stats = platform::stats()?;
    let mut bytes = [0u8; Stats::WORDS * 8];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(stats.to_words()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Ok(bytes)
}
