//! A bounded-time fuzz harness on stable Rust (no cargo-fuzz here): random bytes and
//! random mutations of valid layers and zTOCs, each test for its own
//! time budget (`ZTOC_FUZZ_SECONDS`, else 5 to 10 s). Errors are
//! fine; a panic (or an infinite loop) fails the test. Reproduce a run with
//! `ZTOC_FUZZ_SEED=<seed printed below> cargo test --test it ztoc_fuzz:: -- --nocapture`.

use crate::ztoc_util;

use afterpush::ztoc::{self, Ztoc};
use rand::{Rng, RngCore, SeedableRng};
use std::time::{Duration, Instant};

/// The run's seed and random generator (seeded from `ZTOC_FUZZ_SEED`, else at random, and the
/// seed printed for a rerun) and its time budget (`ZTOC_FUZZ_SECONDS`, else
/// `default_seconds`).
fn fuzz_run(default_seconds: u64) -> (u64, rand::rngs::StdRng, Duration) {
    let seed = std::env::var("ZTOC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("ZTOC_FUZZ_SEED={seed}");
    let budget = Duration::from_secs(
        std::env::var("ZTOC_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seconds),
    );
    (seed, rand::rngs::StdRng::seed_from_u64(seed), budget)
}

fn valid_tar(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..rng.random_range(1..6) {
        let mut data = vec![0u8; rng.random_range(0..40_000)];
        for (k, byte) in data.iter_mut().enumerate() {
            *byte = if k % 7 == 0 {
                rng.random()
            } else {
                b'a' + (k % 13) as u8
            };
        }
        if rng.random_bool(0.3) {
            b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..]), ("mtime", &b"1.25"[..])])
                .unwrap();
        }
        let mut h = if rng.random() {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let name = if rng.random_bool(0.2) {
            format!("{}/{i}", "x".repeat(120))
        } else {
            format!("f{i}")
        };
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn mutate(rng: &mut impl Rng, data: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        if data.is_empty() {
            data.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..data.len());
        match rng.random_range(0..5) {
            0 => data[at] ^= 1 << rng.random_range(0..8),
            1 => data[at] = rng.random(),
            2 => data.truncate(at),
            3 => {
                let n = rng.random_range(1..64);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, junk);
            }
            _ => {
                let end = (at + rng.random_range(1..64)).min(data.len());
                data.drain(at..end);
            }
        }
    }
}

/// Exercises everything a consumer might do with a parsed zTOC.
fn use_ztoc(z: &Ztoc, layer: &[u8]) {
    let _ = z.to_bytes();
    let _ = z.uses_xattrs();
    let _ = z.gzip_checkpoints();
    let _ = z.tar_zinfo();
    for f in z.files.iter().take(8) {
        let _ = ztoc::extract_file(z, &layer.to_vec(), &f.name);
    }
}

#[test]
fn fuzz_for_a_bounded_time() {
    let (_, mut rng, budget) = fuzz_run(10);
    let start = Instant::now();
    let mut runs = 0u64;
    let tar = valid_tar(&mut rng);
    let gz = ztoc_util::gzip_members(&tar, 6, &[tar.len() / 3]);
    let good_ztoc = ztoc_util::build(&gz, 8 * 1024, &[1000]).unwrap().to_bytes();
    while start.elapsed() < budget {
        runs += 1;
        let chunk = [rng.random_range(1..5000)];
        match rng.random_range(0..6) {
            // Arbitrary bytes, both as a layer and as a zTOC.
            0 => {
                let mut junk = vec![0u8; rng.random_range(0..4096)];
                rng.fill_bytes(&mut junk);
                if rng.random() && junk.len() > 2 {
                    junk[0] = 0x1f;
                    junk[1] = 0x8b;
                }
                let _ = ztoc_util::build(&junk, 1024, &chunk);
                if let Ok(z) = Ztoc::from_bytes(&junk) {
                    use_ztoc(&z, &junk);
                }
            }
            // Mutated gzip layers: if they still index, the zTOC must work on them.
            1 | 2 => {
                let mut blob = gz.clone();
                mutate(&mut rng, &mut blob);
                if let Ok(z) = ztoc_util::build(&blob, rng.random_range(512..20_000), &chunk) {
                    use_ztoc(&z, &blob);
                }
            }
            // Mutated tar layers.
            3 => {
                let mut blob = tar.clone();
                mutate(&mut rng, &mut blob);
                if let Ok(z) = ztoc_util::build(&blob, rng.random_range(512..20_000), &chunk) {
                    use_ztoc(&z, &blob);
                }
            }
            // Mutated zTOCs used against the real layer.
            _ => {
                let mut bytes = good_ztoc.clone();
                // Aim at the tables (the root near the start, the strings and TOC
                // near the end), not only at the 32 KiB windows in between.
                let n = bytes.len();
                for _ in 0..rng.random_range(1..4) {
                    let at = if rng.random() {
                        rng.random_range(0..256.min(n))
                    } else {
                        rng.random_range(n.saturating_sub(4096)..n)
                    };
                    bytes[at] = if rng.random() {
                        rng.random()
                    } else {
                        bytes[at] ^ 0x80
                    };
                }
                if rng.random_bool(0.2) {
                    mutate(&mut rng, &mut bytes);
                }
                if let Ok(z) = Ztoc::from_bytes(&bytes) {
                    use_ztoc(&z, &gz);
                }
            }
        }
    }
    println!("{runs} fuzz runs in {:?}", start.elapsed());
    assert!(runs > 0);
}

// ------------------------------------------------------------------ cached zTOCs

/// A layer and its zTOC as the cache would hold it, with the facts the indexer knows.
struct CachedCase {
    layer: Vec<u8>,
    digest: afterpush::oci::Sha256Digest,
    facts: ztoc::LayerFacts,
    good: Ztoc,
    bytes: Vec<u8>,
}

impl CachedCase {
    fn new(layer: Vec<u8>, span_size: u64) -> Self {
        let good = ztoc_util::build(&layer, span_size, &[4096]).unwrap();
        let facts = ztoc::LayerFacts {
            size: layer.len() as u64,
            compression: good.compression_algorithm,
            span_size,
        };
        CachedCase {
            digest: afterpush::oci::Sha256Digest::of(&layer),
            bytes: good.to_bytes(),
            layer,
            facts,
            good,
        }
    }

    /// The indexer's reuse check on `bytes`, with what an accepted zTOC must satisfy.
    fn reuse(&self, bytes: &[u8]) -> Option<Ztoc> {
        let layer = afterpush::soci::CachedLayer {
            digest: &self.digest,
            facts: self.facts,
        };
        let z = afterpush::soci::reusable_ztoc(bytes, &layer).ok()?;
        assert_eq!(z.compressed_archive_size, self.layer.len() as i64);
        assert_eq!(z.compression_algorithm, self.facts.compression);
        assert_eq!(z.span_digests.len() as i64, i64::from(z.max_span_id) + 1);
        if let Ok(checkpoints) = z.gzip_checkpoints() {
            assert_eq!(checkpoints.len(), z.span_digests.len());
            assert!(checkpoints
                .iter()
                .all(|c| c.compressed_offset <= self.layer.len() as u64));
        }
        for f in &z.files {
            assert!(f.uncompressed_offset >= 0 && f.uncompressed_size >= 0);
            if f.file_type == "reg" {
                assert!(f.uncompressed_offset + f.uncompressed_size <= z.uncompressed_archive_size);
            }
        }
        use_ztoc(&z, &self.layer);
        Some(z)
    }
}

/// Field changes that make a zTOC disagree with its layer in a way the reuse check
/// promises to see: each must be rejected.
fn forge_a_checked_field(rng: &mut impl Rng, z: &mut Ztoc) -> &'static str {
    let files = z.files.len();
    match rng.random_range(0..8) {
        0 => {
            z.compressed_archive_size += rng.random_range(1..1000);
            "compressed size"
        }
        1 => {
            z.span_digests.pop();
            "a span digest removed"
        }
        2 => {
            z.span_digests.push(z.span_digests[0].clone());
            "a span digest added"
        }
        3 => {
            z.max_span_id += if rng.random() { 1 } else { -1 };
            "max span id"
        }
        4 => {
            z.version = "0.10".into();
            "version"
        }
        5 => {
            let i = rng.random_range(0..files);
            z.files[i].uncompressed_offset =
                z.uncompressed_archive_size + rng.random_range(0..10_000);
            "an entry past the archive"
        }
        6 => {
            z.uncompressed_archive_size = -rng.random_range(1..1000);
            "negative uncompressed size"
        }
        _ => {
            z.compression_algorithm = match z.compression_algorithm {
                ztoc::LayerCompression::Gzip => ztoc::LayerCompression::Uncompressed,
                ztoc::LayerCompression::Uncompressed => ztoc::LayerCompression::Gzip,
            };
            "compression"
        }
    }
}

/// Mutated cached zTOCs (bytes and fields) through the reuse check: an error or a
/// rejection, never a panic, and nothing accepted that contradicts its layer.
#[test]
fn fuzz_cached_ztocs_for_a_bounded_time() {
    let (_, mut rng, budget) = fuzz_run(5);
    let tar = valid_tar(&mut rng);
    let cases = [
        CachedCase::new(ztoc_util::gzip_members(&tar, 6, &[tar.len() / 3]), 8 * 1024),
        CachedCase::new(tar, 8 * 1024),
    ];
    for case in &cases {
        assert!(case.reuse(&case.bytes).is_some(), "the real zTOC is reused");
    }
    let start = Instant::now();
    let (mut runs, mut accepted) = (0u64, 0u64);
    while start.elapsed() < budget {
        runs += 1;
        let case = &cases[rng.random_range(0..cases.len())];
        if rng.random_bool(0.3) {
            let mut z = case.good.clone();
            let what = forge_a_checked_field(&mut rng, &mut z);
            assert!(
                case.reuse(&z.to_bytes()).is_none(),
                "a zTOC with a forged {what} was accepted for reuse"
            );
            continue;
        }
        let mut bytes = case.bytes.clone();
        let n = bytes.len();
        for _ in 0..rng.random_range(1..4) {
            // The tables sit at both ends (the 32 KiB windows in between are opaque).
            let at = if rng.random() {
                rng.random_range(0..256.min(n))
            } else {
                rng.random_range(n.saturating_sub(4096)..n)
            };
            bytes[at] = rng.random();
        }
        if rng.random_bool(0.2) {
            mutate(&mut rng, &mut bytes);
        }
        accepted += u64::from(case.reuse(&bytes).is_some());
    }
    println!(
        "{runs} cached-zTOC fuzz runs in {:?}, {accepted} mutated zTOCs accepted (consistent with the layer as far as can be checked without reading it)",
        start.elapsed()
    );
    assert!(runs > 0);
}

/// The bytes a tar-layer zTOC entry designates: `tar[offset..offset + size]` of the
/// entry `extract_file` resolves `name` to (following hard links like it), or `None`
/// when that is not a regular file inside the layer.
fn designated_bytes<'a>(z: &Ztoc, tar: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut entry = z.find(name)?;
    for _ in 0..16 {
        if entry.file_type != "hardlink" {
            break;
        }
        entry = z.find(&entry.linkname)?;
    }
    let start = usize::try_from(entry.uncompressed_offset).ok()?;
    let size = usize::try_from(entry.uncompressed_size).ok()?;
    (entry.file_type == "reg").then_some(())?;
    tar.get(start..start.checked_add(size)?)
}

/// Tar-layer zTOCs: a mutated zTOC used with the real layer, and the real zTOC used with
/// a mutated layer. Restoring a file gives an error or the right bytes (those the zTOC's
/// entry designates in the real layer), never other bytes, never a panic.
#[test]
fn fuzz_tar_layer_ztocs_for_a_bounded_time() {
    let (seed, mut rng, budget) = fuzz_run(10);
    let tar = valid_tar(&mut rng);
    let span = 4096;
    let good = ztoc_util::build(&tar, span, &[1000]).unwrap();
    let good_bytes = good.to_bytes();
    let names: Vec<String> = good.files.iter().map(|f| f.name.clone()).collect();
    let start = Instant::now();
    let (mut runs, mut restored, mut refused) = (0u64, 0u64, 0u64);
    while start.elapsed() < budget {
        runs += 1;
        if rng.random() {
            // A mutated zTOC, aimed at the tables (the root and the span digests near
            // the start and end, the TOC in between) as much as at anything else.
            let mut bytes = good_bytes.clone();
            let n = bytes.len();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..n);
                bytes[at] = if rng.random() {
                    rng.random()
                } else {
                    bytes[at] ^ (1 << rng.random_range(0..8))
                };
            }
            if rng.random_bool(0.2) {
                mutate(&mut rng, &mut bytes);
            }
            let Ok(z) = Ztoc::from_bytes(&bytes) else {
                continue;
            };
            use_ztoc(&z, &tar);
            let mut asked: Vec<String> = z.files.iter().take(8).map(|f| f.name.clone()).collect();
            asked.extend(names.iter().cloned());
            for name in &asked {
                match ztoc::extract_file(&z, &tar, name) {
                    Ok(got) => {
                        restored += 1;
                        let want = designated_bytes(&z, &tar, name);
                        assert!(
                            want == Some(&got[..]),
                            "seed {seed}: {name:?} restored {} bytes that are not the entry's",
                            got.len()
                        );
                    }
                    Err(_) => refused += 1,
                }
            }
        } else {
            // The real zTOC with a mutated layer.
            let mut layer = tar.clone();
            mutate(&mut rng, &mut layer);
            for name in &names {
                match ztoc::extract_file(&good, &layer, name) {
                    Ok(got) => {
                        restored += 1;
                        let want = designated_bytes(&good, &tar, name);
                        assert!(
                            want == Some(&got[..]),
                            "seed {seed}: {name:?} restored {} wrong bytes from a mutated layer",
                            got.len()
                        );
                    }
                    Err(_) => refused += 1,
                }
            }
        }
    }
    println!("{runs} tar-layer fuzz runs: {restored} files restored, {refused} refused");
    assert!(restored > 0 && refused > 0);
}
