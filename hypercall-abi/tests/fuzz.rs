//! Host-side fuzzing of the parsers that read untrusted input: the boot bundle (read by
//! xen-lite from the ramdisk), the ELF reader (guest kernels and user programs), and the
//! command-line syntax (xen-lite's and the guest's). Each property runs a bounded number of
//! cases in `cargo xtask test` (through `cargo test --workspace`): inputs are the committed
//! corpus in `fuzz-corpus/`, mutated (bytes flipped, inserted, cut; a bundle resealed so its
//! checksum holds and the deeper checks run), plus plain random bytes. Every case must end in
//! `Ok` or `Err`, never a panic, and what `Ok` returns must stay inside the input.
//!
//! `cargo test -p hypercall-abi --features alloc --test fuzz -- --ignored write_corpus`
//! regenerates the corpus;
//! `PROPTEST_CASES=100000 cargo test -p hypercall-abi --test fuzz` runs longer.

use std::path::PathBuf;

use hypercall_abi::bundle::{reseal, Bundle};
use hypercall_abi::cmdline::{parse_size, parse_u64, words};
use hypercall_abi::elf::{Elf, PF_X};
use proptest::prelude::*;

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds
}

/// One mutation: flip a byte, insert one, cut the input short, or overwrite a little-endian
/// word with a boundary value.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Truncate(usize),
    Word(usize, u64),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let boundary = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(1 << 32),
        Just(1 << 63),
        Just(4096),
        any::<u64>()
    ];
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), boundary).prop_map(|(at, w)| Edit::Word(at, w)),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match *edit {
            Edit::Flip(at, b) => {
                let at = at % bytes.len();
                bytes[at] ^= b | 1;
            }
            Edit::Insert(at, b) => bytes.insert(at % bytes.len(), b),
            Edit::Truncate(at) => bytes.truncate(at % bytes.len()),
            Edit::Word(at, w) => {
                if bytes.len() >= 8 {
                    let at = (at % (bytes.len() - 7)) & !7;
                    bytes[at..at + 8].copy_from_slice(&w.to_le_bytes());
                }
            }
        }
    }
    bytes
}

/// Whether `inner` lies inside `outer`.
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (start, end) = (outer.as_ptr() as usize, outer.as_ptr() as usize + outer.len());
    let (a, b) = (inner.as_ptr() as usize, inner.as_ptr() as usize + inner.len());
    inner.is_empty() || (start <= a && b <= end)
}

fn check_bundle(bytes: &[u8]) {
    if let Ok(bundle) = Bundle::parse(bytes) {
        assert!(within(bytes, bundle.cmdline().as_bytes()));
        for entry in bundle.entries() {
            assert!(within(bytes, entry.data), "entry {} outside the bundle", entry.name);
            assert!(within(bytes, entry.name.as_bytes()));
            assert_eq!(bundle.find(entry.name).map(<[u8]>::len), Some(entry.data.len()));
        }
    }
}

fn check_elf(bytes: &[u8]) {
    if let Ok(elf) = Elf::parse(bytes) {
        let entry = elf.entry();
        let mut executable = false;
        for segment in elf.segments() {
            assert!(within(bytes, elf.file_bytes(&segment)));
            assert!(segment.vaddr.checked_add(segment.mem_len).is_some());
            executable |=
                segment.flags & PF_X != 0 && (segment.vaddr..segment.vend()).contains(&entry);
        }
        assert!(executable, "entry {entry:#x} accepted outside every executable segment");
        let _ = elf.span();
    }
}

fn check_cmdline(text: &str) {
    for word in words(text).flatten() {
        assert!(!word.key.is_empty() || word.value.is_some(), "{text:?}");
        assert!(text.contains(word.key));
        if let Some(value) = word.value {
            let _ = (parse_u64(value), parse_size(value));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bundle_parser_survives_mutated_bundles(seed in any::<prop::sample::Index>(), edits in edits(), seal in any::<bool>()) {
        let seeds = corpus("bundle");
        let mut bytes = mutate(seed.get(&seeds).clone(), &edits);
        if seal && bytes.len() >= hypercall_abi::bundle::HEADER_LEN {
            reseal(&mut bytes);
        }
        check_bundle(&bytes);
    }

    #[test]
    fn bundle_parser_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_bundle(&bytes);
    }

    #[test]
    fn elf_reader_survives_mutated_images(seed in any::<prop::sample::Index>(), edits in edits()) {
        let seeds = corpus("elf");
        check_elf(&mutate(seed.get(&seeds).clone(), &edits));
    }

    #[test]
    fn elf_reader_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_elf(&bytes);
    }

    #[test]
    fn command_line_syntax_survives_mutated_lines(seed in any::<prop::sample::Index>(), edits in edits()) {
        let seeds = corpus("cmdline");
        let bytes = mutate(seed.get(&seeds).clone(), &edits);
        check_cmdline(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn command_line_syntax_survives_random_text(text in "[ -~\t\"=]{0,80}") {
        check_cmdline(&text);
    }
}

/// Writes `fuzz-corpus/`: small valid inputs of each kind, the seeds the mutations start from
/// (needs the writers: `--features alloc`).
#[cfg(feature = "alloc")]
#[test]
#[ignore = "regenerates the committed corpus"]
fn write_corpus() {
    use hypercall_abi::bundle::BundleWriter;
    use hypercall_abi::elf::{write_executable, PF_R, PF_W};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let write = |kind: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(root.join(kind)).unwrap();
        std::fs::write(root.join(kind).join(name), bytes).unwrap();
    };
    let elf_small = write_executable(0x40_0004, &[(0x40_0000, PF_R | PF_X, &[0x90; 16], 0x110)]);
    let elf_two = write_executable(
        0x40_1000,
        &[
            (0x40_0000, PF_R, &[1; 64], 64),
            (0x40_1000, PF_R | PF_X, &[0xc3; 32], 4096),
            (0x40_3000, PF_R | PF_W, &[], 8192),
        ],
    );
    write("elf", "one-segment", &elf_small);
    write("elf", "three-segments", &elf_two);
    let mut writer = BundleWriter::new("mode=pv domain=\"init hello\" domain=counter").unwrap();
    writer.add("guest-pv", &elf_small).unwrap().add("hello", &elf_two).unwrap();
    write("bundle", "two-images", &writer.finish().unwrap());
    write("bundle", "empty", &BundleWriter::new("").unwrap().finish().unwrap());
    let lines = [
        "mode=pv domain=\"init hello usertests\" domain=counter mem=16M loglevel=debug",
        "mode=vmx domain=\"fuzz=11:20000\" domain=primes audit=on umip=off",
        "hello exit=3",
        "attack=pin-shared-info-as-l1",
        "domain=\"a b\" kernel=guest-hvm selftest=pf",
    ];
    for (i, line) in lines.iter().enumerate() {
        write("cmdline", &format!("line-{i}"), line.as_bytes());
    }
}
