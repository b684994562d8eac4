//! The machine-frame allocator: one bit per 4 KiB frame of physical memory.
//!
//! Built at boot from the bootloader's memory map (only `Usable` regions become free frames);
//! frame 0 is never handed out, so a zero frame number can never be mistaken for a real one.
//! The bookkeeping ([`FrameAllocator`]) is pure and unit-tested on the host; xen-lite has one
//! of them, [`FRAMES`], reached only through [`alloc`], [`alloc_contiguous`], [`free`] and (to fill it at boot) [`lock`].

use core::fmt;

use spin::Mutex;

/// Physical memory xen-lite manages: 4 GiB, one bit per frame (128 KiB of bitmap).
pub const FRAME_BITMAP_WORDS: usize = (4 << 30) / 4096 / 64;

/// Every free machine frame.
static FRAMES: Mutex<FrameAllocator<FRAME_BITMAP_WORDS>> = Mutex::new(FrameAllocator::new());

/// The allocator itself, for the boot code that fills it and reports on it.
pub fn lock() -> spin::MutexGuard<'static, FrameAllocator<FRAME_BITMAP_WORDS>> {
    FRAMES.lock()
}

/// One free frame, now allocated.
pub fn alloc() -> Option<Frame> {
    FRAMES.lock().alloc()
}

/// Gives `frame` back.
pub fn free(frame: Frame) -> Result<(), FreeError> {
    FRAMES.lock().free(frame)
}

/// `count` contiguous free frames, now allocated; the first of them.
pub fn alloc_contiguous(count: u64) -> Option<Frame> {
    FRAMES.lock().alloc_contiguous(count)
}

/// A machine frame number: physical address / 4096. Distinct from a guest's gfn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Frame(pub u64);

impl Frame {
    /// The frame's physical address.
    pub const fn addr(self) -> u64 {
        self.0 * 4096
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {:#x}", self.0)
    }
}

/// A bitmap over frames `0..WORDS*64`; a set bit is a free frame.
pub struct FrameAllocator<const WORDS: usize> {
    free: [u64; WORDS],
    free_count: u64,
    /// Lowest word that may hold a free bit (single-frame allocations search from here).
    hint: usize,
}

/// Why a frame could not be freed.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame is beyond the memory this allocator manages.
    OutOfRange(Frame),
    /// The frame is already free: a double free.
    AlreadyFree(Frame),
}

impl<const WORDS: usize> FrameAllocator<WORDS> {
    /// Frames this allocator can describe.
    pub const CAPACITY: u64 = WORDS as u64 * 64;

    /// An allocator with no free frame.
    pub const fn new() -> Self {
        FrameAllocator { free: [0; WORDS], free_count: 0, hint: 0 }
    }

    /// Marks the whole frames inside the physical range `[start, end)` free. Frame 0 and frames
    /// beyond [`Self::CAPACITY`] are ignored. Returns how many frames became free.
    pub fn add_region(&mut self, start: u64, end: u64) -> u64 {
        let first = start.div_ceil(4096).max(1);
        let last = (end / 4096).min(Self::CAPACITY);
        let mut added = 0;
        for frame in first..last {
            if !self.is_free(Frame(frame)) {
                self.set(frame, true);
                added += 1;
            }
        }
        self.hint = 0;
        added
    }

    /// Frames currently free.
    pub fn free_count(&self) -> u64 {
        self.free_count
    }

    /// Whether `frame` is free.
    pub fn is_free(&self, frame: Frame) -> bool {
        frame.0 < Self::CAPACITY && self.free[(frame.0 / 64) as usize] & (1 << (frame.0 % 64)) != 0
    }

    fn set(&mut self, frame: u64, free: bool) {
        let (word, bit) = ((frame / 64) as usize, frame % 64);
        if free {
            self.free[word] |= 1 << bit;
            self.free_count += 1;
        } else {
            self.free[word] &= !(1 << bit);
            self.free_count -= 1;
        }
    }

    /// Takes the lowest free frame.
    pub fn alloc(&mut self) -> Option<Frame> {
        let word = (self.hint..WORDS).find(|&w| self.free[w] != 0)?;
        self.hint = word;
        let frame = word as u64 * 64 + u64::from(self.free[word].trailing_zeros());
        self.set(frame, false);
        Some(Frame(frame))
    }

    /// Takes `count` physically contiguous frames (the lowest run that fits).
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<Frame> {
        if count == 0 {
            return None;
        }
        let mut run_start = 0;
        let mut run_len = 0;
        for frame in 0..Self::CAPACITY {
            if self.is_free(Frame(frame)) {
                if run_len == 0 {
                    run_start = frame;
                }
                run_len += 1;
                if run_len == count {
                    (run_start..run_start + count).for_each(|f| self.set(f, false));
                    return Some(Frame(run_start));
                }
            } else {
                run_len = 0;
            }
        }
        None
    }

    /// Returns `frame` to the pool.
    // Not called at boot; domain teardown (pv mode) is its first user, the tests its checker.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn free(&mut self, frame: Frame) -> Result<(), FreeError> {
        if frame.0 == 0 || frame.0 >= Self::CAPACITY {
            return Err(FreeError::OutOfRange(frame));
        }
        if self.is_free(frame) {
            return Err(FreeError::AlreadyFree(frame));
        }
        self.set(frame.0, true);
        self.hint = self.hint.min((frame.0 / 64) as usize);
        Ok(())
    }
}

impl<const WORDS: usize> Default for FrameAllocator<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Small = FrameAllocator<4>; // 256 frames, 1 MiB

    #[test]
    fn regions_are_trimmed_to_whole_frames_and_frame_zero_is_never_free() {
        let mut frames = Small::new();
        assert_eq!(frames.add_region(0, 3 * 4096), 2, "frame 0 skipped");
        assert_eq!(frames.add_region(5 * 4096 + 1, 8 * 4096 - 1), 1, "partial frames skipped");
        assert_eq!(frames.add_region(200 * 4096, 10_000 * 4096), 56, "clipped to capacity");
        assert_eq!(frames.add_region(0, 3 * 4096), 0, "overlap adds nothing");
        assert_eq!(frames.free_count(), 59);
        assert!(!frames.is_free(Frame(0)));
        assert!(frames.is_free(Frame(6)) && !frames.is_free(Frame(5)) && !frames.is_free(Frame(7)));
    }

    #[test]
    fn alloc_takes_lowest_and_free_returns_it() {
        let mut frames = Small::new();
        frames.add_region(0x10_000, 0x20_000);
        let a = frames.alloc().unwrap();
        let b = frames.alloc().unwrap();
        assert_eq!((a, b), (Frame(0x10), Frame(0x11)));
        assert_eq!(a.addr(), 0x10_000);
        frames.free(a).unwrap();
        assert_eq!(frames.alloc(), Some(a));
        assert_eq!(frames.free_count(), 14);
    }

    #[test]
    fn double_free_and_foreign_frames_are_refused() {
        let mut frames = Small::new();
        frames.add_region(0x10_000, 0x20_000);
        let a = frames.alloc().unwrap();
        frames.free(a).unwrap();
        assert_eq!(frames.free(a), Err(FreeError::AlreadyFree(a)));
        assert_eq!(frames.free(Frame(0)), Err(FreeError::OutOfRange(Frame(0))));
        assert_eq!(frames.free(Frame(256)), Err(FreeError::OutOfRange(Frame(256))));
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut frames = Small::new();
        frames.add_region(0x1000, 0x3000);
        assert!(frames.alloc().is_some() && frames.alloc().is_some());
        assert_eq!(frames.alloc(), None);
        assert_eq!(frames.free_count(), 0);
    }

    #[test]
    fn contiguous_runs_skip_holes() {
        let mut frames = Small::new();
        frames.add_region(0x1000, 0x4000); // frames 1..4
        frames.add_region(0x10_000, 0x18_000); // frames 16..24
        assert_eq!(frames.alloc_contiguous(4), Some(Frame(16)));
        assert_eq!(frames.alloc_contiguous(3), Some(Frame(1)));
        assert_eq!(frames.alloc_contiguous(5), None, "only 4 left in one run");
        assert_eq!(frames.alloc_contiguous(4), Some(Frame(20)));
        assert_eq!(frames.alloc_contiguous(0), None);
        assert_eq!(frames.free_count(), 0);
    }
}
