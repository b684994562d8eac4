//! The guest kernel's frame allocator: its own memory, frame by frame (gfns).
//!
//! Everything from `StartInfo::first_free_gfn` to the end of the domain's memory is free at
//! boot. Page-table entries name a gfn by its machine address, `StartInfo::pte_base + gfn *
//! 4096` (`page_tables`).

use spin::Mutex;

/// Frames the allocator can track: 64 MiB of guest memory.
const WORDS: usize = 256;

struct Frames {
    /// Bit set: the gfn is free.
    free: [u64; WORDS],
}

static FRAMES: Mutex<Frames> = Mutex::new(Frames { free: [0; WORDS] });

/// Frees `first..end` for allocation (at boot).
pub fn init(first: u64, end: u64) {
    let mut frames = FRAMES.lock();
    for gfn in first..end.min(WORDS as u64 * 64) {
        frames.free[(gfn / 64) as usize] |= 1 << (gfn % 64);
    }
}

/// Takes a free gfn.
pub fn alloc() -> Option<u64> {
    let mut frames = FRAMES.lock();
    let word = frames.free.iter().position(|&w| w != 0)?;
    let bit = frames.free[word].trailing_zeros();
    frames.free[word] &= !(1 << bit);
    Some(word as u64 * 64 + u64::from(bit))
}

/// Returns `gfn` to the pool.
pub fn free(gfn: u64) {
    FRAMES.lock().free[(gfn / 64) as usize] |= 1 << (gfn % 64);
}

/// Free frames left.
pub fn free_count() -> u64 {
    FRAMES.lock().free.iter().map(|w| u64::from(w.count_ones())).sum()
}
