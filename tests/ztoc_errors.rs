//! Bad layers: each gives an error naming what and where, never a panic; the CLI then
//! writes no zTOC. Also the CLI's happy path (create, info, list, get-file).

mod ztoc_util;

use afterpush::ztoc::ZtocError;
use std::process::Command;

fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20 {
        let data = format!("file number {i}\n").repeat(200 * (i + 1));
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("dir/file-{i}"), data.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    ztoc_util::gzip_members(data, 6, &[])
}

fn build_err(blob: &[u8]) -> ZtocError {
    ztoc_util::build(blob, 16 * 1024, &[777]).expect_err("the layer must be rejected")
}

#[test]
fn truncated_gzip() {
    let blob = gz(&small_tar());
    for cut in [blob.len() - 3, blob.len() / 2, 11] {
        let err = build_err(&blob[..cut]);
        assert!(
            matches!(err, ZtocError::TruncatedGzip { compressed_offset, .. } if compressed_offset == cut as u64),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("compressed offset {cut}")),
            "{err}"
        );
    }
}

#[test]
fn corrupt_deflate_data() {
    let blob = gz(&small_tar());
    let mut bad = blob.clone();
    // A run of 0xff bytes in the middle breaks the Huffman codes (or the CRC).
    for b in &mut bad[blob.len() / 2..blob.len() / 2 + 16] {
        *b = 0xff;
    }
    let err = build_err(&bad);
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ZtocError::CorruptGzip { .. } | ZtocError::InvalidTar { .. }
        ),
        "{msg}"
    );
    assert!(msg.contains("offset"), "{msg}");
    // A wrong CRC alone is caught too.
    let mut bad_crc = blob.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let err = build_err(&bad_crc);
    assert!(matches!(err, ZtocError::CorruptGzip { .. }), "{err}");
}

#[test]
fn trailing_garbage() {
    let mut blob = gz(&small_tar());
    let end = blob.len() as u64;
    blob.extend_from_slice(b"not gzip at all");
    let err = build_err(&blob);
    assert!(
        matches!(err, ZtocError::TrailingGarbage { compressed_offset } if compressed_offset == end),
        "{err}"
    );
    // Zero padding is garbage too (Go's gzip reader rejects it as well).
    let mut blob = gz(&small_tar());
    blob.extend_from_slice(&[0; 512]);
    assert!(matches!(
        build_err(&blob),
        ZtocError::TrailingGarbage { .. }
    ));
    // A 0x1f that is not followed by a gzip header.
    let mut blob = gz(&small_tar());
    blob.extend_from_slice(&[0x1f, 0x00, 0x00]);
    assert!(matches!(
        build_err(&blob),
        ZtocError::TrailingGarbage { .. }
    ));
}

#[test]
fn tar_without_end_of_archive() {
    let tar = small_tar();
    let cut = tar.len() - 1024; // drop both zero blocks
    let err = build_err(&gz(&tar[..cut]));
    assert!(
        matches!(err, ZtocError::TruncatedTar { uncompressed_offset, .. } if uncompressed_offset == cut as u64),
        "{err}"
    );
    // Ending inside an entry's data.
    let err = build_err(&gz(&tar[..3000]));
    assert!(matches!(err, ZtocError::TruncatedTar { .. }), "{err}");
    // Not a tar at all.
    let err = build_err(&gz(&[7u8; 4096]));
    assert!(
        matches!(
            err,
            ZtocError::InvalidTar {
                uncompressed_offset: 0,
                ..
            }
        ),
        "{err}"
    );
}

fn header_with_size(size: u64, typeflag: u8) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_mode(0o644);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn absurd_sizes() {
    // Larger than any offset can be (base-256 encoded by the tar crate).
    let err = build_err(&gz(&header_with_size(u64::MAX / 2, b'0')));
    assert!(err.to_string().contains("absurd size"), "{err}");
    // Plausible number, but the stream ends long before.
    let err = build_err(&gz(&header_with_size(1 << 40, b'0')));
    assert!(matches!(err, ZtocError::TruncatedTar { .. }), "{err}");
    // A PAX header bigger than we hold in memory.
    let err = build_err(&gz(&header_with_size(64 << 20, b'x')));
    assert!(
        matches!(err, ZtocError::RecordTooLarge { uncompressed_offset: 0, size, .. } if size == 64 << 20),
        "{err}"
    );
}

#[test]
fn unsupported_and_skipped_typeflags() {
    let err = build_err(&gz(&header_with_size(0, b'S')));
    assert!(
        matches!(
            err,
            ZtocError::UnsupportedEntry {
                typeflag: 'S',
                uncompressed_offset: 0,
                ..
            }
        ),
        "{err}"
    );
    // A global PAX header is skipped; the entries around it are indexed.
    let mut b = tar::Builder::new(Vec::new());
    let mut g = tar::Header::new_ustar();
    let rec = b"15 comment=hey\n";
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    g.set_size(rec.len() as u64);
    g.set_path("pax_global_header").unwrap();
    b.append_data(&mut g, "pax_global_header", &rec[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    b.append_data(&mut h, "after", &b"abc"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let blob = gz(&tar);
    let z = ztoc_util::build(&blob, 1024, &[50]).unwrap();
    let names: Vec<&str> = z.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["after"]);
    ztoc_util::check_files(&z, &blob, &[("after".into(), b"abc".to_vec())]);
}

#[test]
fn builder_is_poisoned_after_an_error() {
    let blob = gz(&small_tar());
    let mut b = afterpush::ztoc::ZtocBuilder::new(
        afterpush::ztoc::LayerCompression::Gzip,
        afterpush::ztoc::ZtocOptions::default(),
    );
    assert!(b.feed(b"\x1f\x8b\x08\x00garbage-garbage-garbage").is_err());
    assert!(matches!(b.feed(&blob), Err(ZtocError::Poisoned(_))));
    assert!(b.finish().is_err());
}

#[test]
fn in_layer_names_the_layer() {
    let err = build_err(&gz(&small_tar())[..20]).in_layer("sha256:abc");
    let msg = err.to_string();
    assert!(msg.starts_with("layer sha256:abc: truncated gzip"), "{msg}");
}

fn afterpush(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_create_info_list_get_file_and_no_output_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, gz(&tar)).unwrap();
    let out = dir.path().join("layer.ztoc");
    let o = afterpush(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        layer.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--span-size".as_ref(),
        "8192".as_ref(),
        "--build-tool-id".as_ref(),
        "cli test".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let z = afterpush::ztoc::Ztoc::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(z.build_tool_identifier, "cli test");
    assert_eq!(z.files.len(), 20);

    let o = afterpush(&[
        "ztoc".as_ref(),
        "info".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(o.status.success());
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["entries"], 20);
    assert_eq!(info["span_size"], 8192);
    assert_eq!(
        info["checkpoints"].as_array().unwrap().len() as i32,
        z.max_span_id + 1
    );

    let o = afterpush(&["ztoc".as_ref(), "list".as_ref(), out.as_os_str()]);
    assert!(String::from_utf8(o.stdout).unwrap().contains("dir/file-19"));

    let got = dir.path().join("file-7");
    let o = afterpush(&[
        "ztoc".as_ref(),
        "get-file".as_ref(),
        out.as_os_str(),
        layer.as_os_str(),
        "dir/file-7".as_ref(),
        "-o".as_ref(),
        got.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&got).unwrap(),
        "file number 7\n".repeat(1600).into_bytes()
    );

    // A truncated layer: clear error naming the layer and the offset, and no file.
    let bad = dir.path().join("bad.tar.gz");
    let blob = gz(&tar);
    std::fs::write(&bad, &blob[..blob.len() / 2]).unwrap();
    let bad_out = dir.path().join("bad.ztoc");
    let o = afterpush(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        bad.as_os_str(),
        "-o".as_ref(),
        bad_out.as_os_str(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("bad.tar.gz") && stderr.contains("compressed offset"),
        "{stderr}"
    );
    assert!(!bad_out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        4,
        "no temporary files left behind: {leftovers:?}"
    );
}
