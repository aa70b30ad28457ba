//! Property tests: random trees built with the `tar` crate, gzip'd by flate2 at several
//! levels (single and multi-member), random span sizes and feed chunk sizes.
//! Every regular file must be restored through the zTOC, and the checkpoints must equal
//! an independent computation (see `ztoc_util::check_gzip_ztoc`).

use crate::ztoc_util;

use afterpush::ztoc::{self, LayerCompression};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
enum Kind {
    File { size: usize, seed: u64 },
    Dir,
    Symlink,
    Hardlink,
}

#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    decoration: u8,
    xattr: bool,
    subsecond: Option<u32>,
}

fn spec(span: usize) -> impl Strategy<Value = Spec> {
    let size = prop_oneof![Just(0usize), 1usize..2_000, (span + 1)..(3 * span + 2),];
    let kind = prop_oneof![
        4 => (size, any::<u64>()).prop_map(|(size, seed)| Kind::File { size, seed }),
        1 => Just(Kind::Dir),
        1 => Just(Kind::Symlink),
        1 => Just(Kind::Hardlink),
    ];
    (
        kind,
        0u8..4,
        any::<bool>(),
        proptest::option::of(1u32..1_000_000_000),
    )
        .prop_map(|(kind, decoration, xattr, subsecond)| Spec {
            kind,
            decoration,
            xattr,
            subsecond,
        })
}

/// Partly compressible content, so deflate makes several blocks of several kinds.
fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut x = seed | 1;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 3 == 0 {
            out.extend_from_slice(format!("line {} of some text\n", x % 1000).as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(size);
    out
}

fn name_for(i: usize, decoration: u8) -> String {
    match decoration {
        0 => format!("f{i}"),
        1 => format!("d\u{fc}r-\u{65e5}\u{672c}/n\u{e4}me-{i}"),
        2 => format!("{}/{i}", "long-directory-name".repeat(8)),
        _ => format!("./dot/{i}.txt"),
    }
}

struct Layer {
    tar: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
    mtimes: Vec<(String, String)>,
    xattr_files: usize,
}

fn make_tar(specs: &[Spec], gnu: bool) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut mtimes = Vec::new();
    let mut xattr_files = 0;
    let base_mtime = 1_700_000_000u64;
    for (i, s) in specs.iter().enumerate() {
        if matches!(s.kind, Kind::Hardlink) && files.is_empty() {
            continue; // nothing to link to yet
        }
        let name = name_for(i, s.decoration);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if s.xattr {
            pax.push((
                "SCHILY.xattr.user.test".into(),
                format!("v{i}").into_bytes(),
            ));
            xattr_files += 1;
        }
        if let Some(ns) = s.subsecond {
            pax.push(("mtime".into(), format!("{base_mtime}.{ns:09}").into_bytes()));
            let t = chrono::DateTime::from_timestamp(base_mtime as i64, ns).unwrap();
            let full = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let (head, frac) = full.trim_end_matches('Z').split_once('.').unwrap();
            let frac = frac.trim_end_matches('0');
            mtimes.push((name.clone(), format!("{head}.{frac}Z")));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = if gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        h.set_mtime(base_mtime);
        h.set_uid(1000 + i as u64);
        h.set_gid(100);
        match &s.kind {
            Kind::File { size, seed } => {
                let data = content(*size, *seed);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &name, &data[..]).unwrap();
                files.push((name, data));
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &name, std::io::empty()).unwrap();
            }
            Kind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &name, "../some/target").unwrap();
            }
            Kind::Hardlink => {
                let (target, data) = files.last().cloned().expect("checked above");
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, &name, &target).unwrap();
                files.push((name, data));
            }
        }
    }
    Layer {
        tar: b.into_inner().unwrap(),
        files,
        mtimes,
        xattr_files,
    }
}

fn check_toc(z: &ztoc::Ztoc, layer: &Layer) {
    assert_eq!(z.uncompressed_archive_size as usize, tar_end(&layer.tar));
    for (name, _) in &layer.files {
        assert!(z.find(name).is_some(), "{name:?} missing from the TOC");
    }
    for (name, t) in &layer.mtimes {
        assert_eq!(&z.find(name).unwrap().mod_time, t, "mod_time of {name:?}");
    }
    assert_eq!(z.uses_xattrs(), layer.xattr_files > 0);
}

/// Offset after the two zero blocks the tar crate writes at the end.
fn tar_end(tar: &[u8]) -> usize {
    tar.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn gzip_layers_restore_and_checkpoints_match(
        span in 1_024u64..40_000,
        specs_seed in proptest::collection::vec(spec(20_000), 0..14),
        level in prop_oneof![Just(0u32), Just(1), Just(6), Just(9)],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        gnu in any::<bool>(),
        chunks in proptest::collection::vec(1usize..70_000, 1..5),
    ) {
        let layer = make_tar(&specs_seed, gnu);
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(layer.tar.len() + 1)).collect();
        let blob = ztoc_util::gzip_members(&layer.tar, level, &cuts);
        let z = ztoc_util::build(&blob, span, &chunks).unwrap();
        prop_assert_eq!(z.compression_algorithm, LayerCompression::Gzip);
        check_toc(&z, &layer);
        ztoc_util::check_gzip_ztoc(&z, &blob, span);
        ztoc_util::check_files(&z, &blob, &layer.files);
        // What we write reads back identically.
        let bytes = z.to_bytes();
        prop_assert_eq!(&ztoc::Ztoc::from_bytes(&bytes).unwrap(), &z);
        // Encoding straight from the builder's compact entries gives the same bytes.
        let encoded = ztoc_util::build_encoded(&blob, span, &chunks).unwrap();
        prop_assert_eq!(encoded.entries, z.files.len());
        prop_assert_eq!(encoded.uses_xattrs, z.uses_xattrs());
        prop_assert!(encoded.bytes == bytes, "finish_encoded differs from to_bytes");
        prop_assert_eq!(z.into_bytes(), bytes);
    }

    #[test]
    fn tar_layers_restore_and_spans_match(
        span in 512u64..50_000,
        specs_seed in proptest::collection::vec(spec(20_000), 0..10),
        chunks in proptest::collection::vec(1usize..70_000, 1..5),
    ) {
        let layer = make_tar(&specs_seed, true);
        let z = ztoc_util::build(&layer.tar, span, &chunks).unwrap();
        prop_assert_eq!(z.compression_algorithm, LayerCompression::Uncompressed);
        check_toc(&z, &layer);
        let size = layer.tar.len() as u64;
        prop_assert_eq!(z.tar_zinfo().unwrap(), (2, span as i64, size as i64));
        let expected_max = (size / span) as i64 - i64::from(size % span == 0);
        prop_assert_eq!(i64::from(z.max_span_id), expected_max);
        let digests: Vec<String> = layer.tar.chunks(span as usize)
            .map(|c| format!("sha256:{}", hex::encode(Sha256::digest(c))))
            .collect();
        prop_assert_eq!(&z.span_digests, &digests);
        ztoc_util::check_files(&z, &layer.tar, &layer.files);
        let encoded = ztoc_util::build_encoded(&layer.tar, span, &chunks).unwrap();
        prop_assert!(encoded.bytes == z.to_bytes(), "finish_encoded differs from to_bytes");
    }
}
