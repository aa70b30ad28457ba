//! zTOC FlatBuffers: soci's golden vector byte for byte, round trips, the tar zinfo.

use afterpush::ztoc::{FileMetadata, LayerCompression, Ztoc};
use sha2::{Digest, Sha256};

/// The zTOC of soci-snapshotter's `TestWriteZtoc` (`ztoc/ztoc_test.go`), whose expected
/// size and digest are pinned below (`docs/ztoc-format.md` §1).
fn golden() -> Ztoc {
    let entry = FileMetadata {
        mod_time: "0001-01-01T00:00:00Z".into(),
        ..FileMetadata::default()
    };
    Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "AWS SOCI CLI".into(),
        compressed_archive_size: 2_000_000,
        uncompressed_archive_size: 2_500_000,
        files: vec![entry.clone(), entry],
        compression_algorithm: LayerCompression::Gzip,
        max_span_id: 3,
        span_digests: vec![],
        checkpoints: vec![0u8; 65_536],
    }
}

#[test]
fn golden_vector_is_byte_identical() {
    let bytes = golden().to_bytes();
    assert_eq!(bytes.len(), 65_928);
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        "eba28fdf50b1b57543f57dd051b2468c1d4f57b64d2006c75aa4de1d03e6c7ec"
    );
    assert_eq!(Ztoc::from_bytes(&bytes).unwrap(), golden());
    assert_eq!(golden().into_bytes(), bytes);
}

#[test]
fn round_trip_with_every_field_set() {
    let mut xattrs = std::collections::BTreeMap::new();
    xattrs.insert("SCHILY.xattr.user.k".to_string(), "v\u{e9}".to_string());
    xattrs.insert("mtime".to_string(), "1.5".to_string());
    let z = Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "afterpush test".into(),
        compressed_archive_size: 123,
        uncompressed_archive_size: 4096,
        files: vec![FileMetadata {
            name: "d\u{fc}r/f".into(),
            file_type: "reg".into(),
            uncompressed_offset: 512,
            uncompressed_size: 7,
            linkname: "l".into(),
            mode: 0o100644,
            uid: u32::MAX,
            gid: 5,
            uname: "u".into(),
            gname: "g".into(),
            mod_time: "1970-01-01T00:00:01.5Z".into(),
            devmajor: 1,
            devminor: 2,
            xattrs,
        }],
        compression_algorithm: LayerCompression::Uncompressed,
        max_span_id: 0,
        span_digests: vec!["sha256:00".into(), "sha256:11".into()],
        checkpoints: vec![1, 2, 3],
    };
    let bytes = z.to_bytes();
    let back = Ztoc::from_bytes(&bytes).unwrap();
    assert_eq!(back, z);
    assert!(back.uses_xattrs());
    // Re-encoding what we read gives the same bytes (stable, deterministic).
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.into_bytes(), bytes);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [
        &b""[..],
        &[0u8; 3],
        &[0xff; 64],
        &[4, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff],
    ] {
        assert!(Ztoc::from_bytes(bytes).is_err(), "{bytes:?}");
    }
    // Every truncation of a valid zTOC is an error or a (different) valid zTOC.
    let bytes = golden().to_bytes();
    for cut in (0..bytes.len()).step_by(97) {
        let _ = Ztoc::from_bytes(&bytes[..cut]);
    }
}
