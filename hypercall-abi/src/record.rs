//! Records that cross the guest boundary by value: a hypervisor copies one in from guest
//! memory, then validates the copy (never the guest's bytes in place, which the guest could
//! change under it), and copies results out the same way. Xen's `copy_from_guest`; rust-vmm's
//! `ByteValued`.
//!
//! Every record is little-endian, laid out as its `#[repr(C)]` struct, and exactly as long as
//! its [`Record::Bytes`]. Decoding cannot fail: any bytes make some record, and deciding
//! whether it is a valid one is the receiver's job.

/// A fixed-size record of the guest ABI.
pub trait Record: Sized {
    /// Its bytes in guest memory (an array as long as the struct).
    type Bytes: AsRef<[u8]> + AsMut<[u8]>;

    /// All-zero bytes, for copying a record into.
    const ZERO: Self::Bytes;

    /// The record in `bytes`.
    fn decode(bytes: &Self::Bytes) -> Self;

    /// The record's bytes.
    fn encode(&self) -> Self::Bytes;
}

/// The little-endian `u64` at byte `at` of `bytes`.
#[inline]
pub fn word(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

impl Record for u64 {
    type Bytes = [u8; 8];
    const ZERO: [u8; 8] = [0; 8];

    #[inline]
    fn decode(bytes: &[u8; 8]) -> Self {
        u64::from_le_bytes(*bytes)
    }

    #[inline]
    fn encode(&self) -> [u8; 8] {
        self.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::{MmuUpdate, MmuextOp, Stats, TrapInfo};

    fn round_trip<R: Record + PartialEq + core::fmt::Debug>(record: R) {
        let bytes = record.encode();
        assert_eq!(bytes.as_ref().len(), core::mem::size_of::<R>());
        assert_eq!(R::decode(&bytes), record);
    }

    #[test]
    fn records_survive_a_round_trip() {
        round_trip(0x0123_4567_89ab_cdefu64);
        round_trip(MmuUpdate { ptr: 0x1234_5008, val: 0x8000_0000_0000_0067 });
        round_trip(MmuextOp { cmd: 5, arg: 0xabc });
        round_trip(TrapInfo { vector: 14, flags: 3, reserved: [0; 6], address: 0xffff_8000 });
        let mut stats = Stats::new();
        stats.hypercalls[3] = 7;
        stats.vm_exits[10] = 9;
        stats.cr3_writes = 2;
        round_trip(stats);
    }

    #[test]
    fn layouts_are_the_structs() {
        let bytes = TrapInfo { vector: 0x80, flags: 3, reserved: [0; 6], address: 0x1122 }.encode();
        assert_eq!(bytes[..2], [0x80, 3]);
        assert_eq!(word(&bytes, 8), 0x1122);
        let bytes = MmuUpdate { ptr: 1, val: 2 }.encode();
        assert_eq!((word(&bytes, 0), word(&bytes, 8)), (1, 2));
    }
}
