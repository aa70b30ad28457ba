//! Bad layers: each gives an error naming what and where, never a panic; the CLI then
//! writes no zTOC. Also the CLI's happy path (create, info, list, get-file).

mod ztoc_util;

use afterpush::ztoc::ZtocError;
use std::path::Path;
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
        "65536".as_ref(),
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
    assert_eq!(info["span_size"], 65536);
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

fn run_ok(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let o = afterpush(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// `small_tar` with other bytes of the same sizes: the same TOC, other contents.
fn small_tar_other_bytes() -> Vec<u8> {
    let tar = small_tar();
    let other: Vec<u8> = String::from_utf8(tar.clone())
        .unwrap()
        .replace("file number", "FILE NUMBER")
        .into_bytes();
    assert_eq!(other.len(), tar.len());
    // Only the data changed: headers (names, sizes, checksums) stay valid.
    let z = ztoc_util::build(&other, 64 * 1024, &[4096]).unwrap();
    assert_eq!(z.files.len(), 20);
    other
}

#[test]
fn tar_ztoc_used_with_another_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, &tar).unwrap();
    let other = dir.path().join("other.tar");
    std::fs::write(&other, small_tar_other_bytes()).unwrap();
    let gzipped = dir.path().join("layer.tar.gz");
    std::fs::write(&gzipped, gz(&tar)).unwrap();
    let ztoc_path = dir.path().join("layer.ztoc");
    run_ok(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        layer.as_os_str(),
        "-o".as_ref(),
        ztoc_path.as_os_str(),
        "--span-size".as_ref(),
        "65536".as_ref(),
    ]);
    let get = |layer: &std::path::Path| {
        afterpush(&[
            "ztoc".as_ref(),
            "get-file".as_ref(),
            ztoc_path.as_os_str(),
            layer.as_os_str(),
            "dir/file-7".as_ref(),
        ])
    };
    let o = get(&layer);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, "file number 7\n".repeat(1600).into_bytes());
    // Same size, other bytes: the span holding the file does not match.
    let o = get(&other);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "other.tar: accepted");
    assert!(o.stdout.is_empty(), "other.tar: printed bytes");
    assert!(
        stderr.contains("other.tar") && stderr.contains("span 1 ") && stderr.contains("digest"),
        "{stderr}"
    );
    // The gzip of the same tar, and a truncated tar: not the size the zTOC describes.
    let short = dir.path().join("short.tar");
    std::fs::write(&short, &tar[..tar.len() / 2]).unwrap();
    for (wrong, name) in [(&gzipped, "layer.tar.gz"), (&short, "short.tar")] {
        let o = get(wrong);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(o.stdout.is_empty(), "{name}: printed bytes");
        assert!(
            stderr.contains(name)
                && stderr.contains(&format!("describes a layer of {} bytes", tar.len())),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn tar_ztoc_spans_must_fit_the_layer() {
    let tar = small_tar();
    let good = ztoc_util::build(&tar, 64 * 1024, &[4096]).unwrap();
    let extract = |z: &afterpush::ztoc::Ztoc| {
        afterpush::ztoc::extract_file(z, &tar, "dir/file-19").map_err(|e| e.to_string())
    };
    assert!(extract(&good).unwrap() == "file number 19\n".repeat(4000).into_bytes());
    // From here on only the errors matter (not the bytes, should one succeed).
    let extract = |z: &afterpush::ztoc::Ztoc| extract(z).map(|bytes| bytes.len());
    let mut no_digests = good.clone();
    no_digests.span_digests.clear();
    assert!(extract(&no_digests).unwrap_err().contains("span digests"));
    let mut bigger = good.clone();
    bigger.compressed_archive_size += 1;
    assert!(extract(&bigger)
        .unwrap_err()
        .contains("describes a layer of"));
    let mut past_the_end = good.clone();
    let last = past_the_end.files.len() - 1;
    past_the_end.files[last].uncompressed_size = tar.len() as i64;
    assert!(extract(&past_the_end).unwrap_err().contains("run past"));
}

#[test]
fn span_size_out_of_range_is_refused_by_ztoc_and_soci_create() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, small_tar()).unwrap();
    let out = dir.path().join("layer.ztoc");
    for bad in [
        "0",
        "1024",
        "2GiB",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let o = afterpush(&[
            "ztoc".as_ref(),
            "create".as_ref(),
            layer.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--span-size".as_ref(),
            bad.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "ztoc create --span-size {bad} accepted"
        );
        assert!(
            stderr.contains("--span-size") && stderr.contains("out of range"),
            "{bad}: {stderr}"
        );
        assert!(!out.exists(), "{bad}: a zTOC was written");
        // `soci create` refuses it before opening the image.
        let o = afterpush(&[
            "soci".as_ref(),
            "create".as_ref(),
            format!("oci:{}", dir.path().join("no-such-layout").display()).as_ref(),
            "--span-size".as_ref(),
            bad.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains("out of range"),
            "soci create --span-size {bad}: {stderr}"
        );
    }
    // The range's ends and units are accepted.
    for good in ["64KiB", "1GiB", "4194304"] {
        run_ok(&[
            "ztoc".as_ref(),
            "create".as_ref(),
            layer.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--span-size".as_ref(),
            good.as_ref(),
        ]);
        let info = afterpush(&[
            "ztoc".as_ref(),
            "info".as_ref(),
            out.as_os_str(),
            "--json".as_ref(),
        ]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let expected = afterpush::settings::parse_size("SPAN_SIZE", good).unwrap();
        assert_eq!(info["span_size"], expected, "{good}");
    }
}

/// Peak RSS in bytes of `afterpush args...`, measured by GNU time (`%M`, KiB).
fn afterpush_peak_rss(args: &[&std::ffi::OsStr], stdout: std::fs::File) -> u64 {
    let report = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_afterpush"))
        .args(args)
        .stdout(stdout)
        .status()
        .expect("GNU time is required by this test: apt-get install -y time");
    assert!(status.success(), "afterpush {args:?} failed");
    let text = std::fs::read_to_string(report.path()).unwrap();
    text.trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn get_file_streams_a_big_file_in_bounded_memory() {
    use std::io::{Read, Write};
    const SIZE: u64 = 192 << 20;
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("big.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&layer).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(SIZE);
        h.set_mode(0o644);
        b.append_data(&mut h, "big", std::io::repeat(b'x').take(SIZE))
            .unwrap();
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    let ztoc_path = dir.path().join("big.ztoc");
    run_ok(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        layer.as_os_str(),
        "-o".as_ref(),
        ztoc_path.as_os_str(),
    ]);
    let out_path = dir.path().join("big.out");
    let rss = afterpush_peak_rss(
        &[
            "ztoc".as_ref(),
            "get-file".as_ref(),
            ztoc_path.as_os_str(),
            layer.as_os_str(),
            "big".as_ref(),
        ],
        std::fs::File::create(&out_path).unwrap(),
    );
    // Check the output without holding it whole either.
    let mut got = std::fs::File::open(&out_path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = got.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'x'), "wrong bytes");
        total += n as u64;
    }
    assert_eq!(total, SIZE);
    assert!(
        rss < 64 << 20,
        "get-file of a {SIZE}-byte file peaked at {rss} bytes RSS"
    );
}

#[test]
fn create_and_get_file_refuse_to_write_over_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, &tar).unwrap();
    let link = dir.path().join("link.tar");
    std::os::unix::fs::symlink(&layer, &link).unwrap();
    let hard = dir.path().join("hard.tar");
    std::fs::hard_link(&layer, &hard).unwrap();
    let dotted = dir.path().join(".").join("layer.tar");
    for output in [&layer, &link, &hard, &dotted] {
        let o = afterpush(&[
            "ztoc".as_ref(),
            "create".as_ref(),
            layer.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "-o {}: accepted", output.display());
        assert!(
            stderr.contains("refusing to replace") && stderr.contains("layer.tar"),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&layer).unwrap(), tar, "the layer changed");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }
    // get-file: neither the zTOC nor the layer may be the output.
    let ztoc_path = dir.path().join("layer.ztoc");
    run_ok(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        link.as_os_str(),
        "-o".as_ref(),
        ztoc_path.as_os_str(),
    ]);
    let ztoc_bytes = std::fs::read(&ztoc_path).unwrap();
    for output in [&layer, &ztoc_path] {
        let o = afterpush(&[
            "ztoc".as_ref(),
            "get-file".as_ref(),
            ztoc_path.as_os_str(),
            layer.as_os_str(),
            "dir/file-1".as_ref(),
            "-o".as_ref(),
            output.as_os_str(),
        ]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to replace"));
    }
    assert_eq!(std::fs::read(&layer).unwrap(), tar);
    assert_eq!(std::fs::read(&ztoc_path).unwrap(), ztoc_bytes);
}

#[test]
fn list_and_info_escape_control_characters() {
    let evil = "evil\x1b[2J\x07\r\nforged line\u{202e}txt.exe\\";
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", evil.as_bytes()), ("linkpath", b"t\x1b]0;x\x07")])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_data(&mut h, "placeholder", &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, &tar).unwrap();
    let ztoc_path = dir.path().join("layer.ztoc");
    run_ok(&[
        "ztoc".as_ref(),
        "create".as_ref(),
        layer.as_os_str(),
        "-o".as_ref(),
        ztoc_path.as_os_str(),
        "--build-tool-id".as_ref(),
        "tool\x1b[31m".as_ref(),
    ]);
    let z = afterpush::ztoc::Ztoc::from_bytes(&std::fs::read(&ztoc_path).unwrap()).unwrap();
    assert_eq!(z.files[0].name, evil, "the zTOC keeps the name as it is");

    let o = run_ok(&["ztoc".as_ref(), "list".as_ref(), ztoc_path.as_os_str()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        !text.contains(['\x1b', '\x07', '\r', '\u{202e}']),
        "raw control characters: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one header and one entry line: {text:?}");
    assert!(
        lines[1].ends_with(
            "evil\\u{1b}[2J\\u{7}\\r\\nforged line\\u{202e}txt.exe\\\\ -> t\\u{1b}]0;x\\u{7}"
        ),
        "{}",
        lines[1]
    );

    let o = run_ok(&["ztoc".as_ref(), "info".as_ref(), ztoc_path.as_os_str()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("tool\\u{1b}[31m") && !text.contains('\x1b'),
        "{text}"
    );
    // JSON keeps the exact strings (escaped the JSON way).
    let o = run_ok(&[
        "ztoc".as_ref(),
        "info".as_ref(),
        ztoc_path.as_os_str(),
        "--json".as_ref(),
    ]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["build_tool_identifier"], "tool\x1b[31m");
}

/// A layer of `entries` empty files named `dir/<name_len - 4 characters>` (one 512-byte
/// header each), gzip-compressed.
fn write_many_empty_files(path: &Path, entries: usize, name_len: usize) {
    use std::io::Write;
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(std::io::BufWriter::new(gz));
    for i in 0..entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_username("root").unwrap();
        h.set_groupname("root").unwrap();
        let name = format!("d{:03}/{i:0>width$}", i / 10_000, width = name_len - 5);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    let buffered = b.into_inner().unwrap();
    let gz = buffered.into_inner().map_err(|e| e.into_error()).unwrap();
    gz.finish().unwrap().flush().unwrap();
}

/// Peak RSS in bytes of `afterpush ztoc create layer -o out`.
fn ztoc_create_peak_rss(layer: &Path, out: &Path) -> u64 {
    afterpush_peak_rss(
        &[
            "ztoc".as_ref(),
            "create".as_ref(),
            layer.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        tempfile::tempfile().unwrap(),
    )
}

/// A layer of many empty files is all TOC entries: they are held compactly while the
/// layer streams by and released as they are encoded, so the build's peak is about the
/// zTOC's size, not the entries' and the zTOC's together.
#[test]
fn create_holds_many_tiny_entries_compactly() {
    const ENTRIES: usize = 600_000;
    // Long names (the ustar limit is 100) make the held entries close to the encoded
    // ones in size, where holding both at once shows most.
    const NAME_LEN: usize = 96;
    let dir = tempfile::tempdir().unwrap();
    let (tiny, layer) = (
        dir.path().join("tiny.tar.gz"),
        dir.path().join("many.tar.gz"),
    );
    write_many_empty_files(&tiny, 1, NAME_LEN);
    write_many_empty_files(&layer, ENTRIES, NAME_LEN);
    let base = ztoc_create_peak_rss(&tiny, &dir.path().join("tiny.ztoc"));
    let out = dir.path().join("many.ztoc");
    let rss = ztoc_create_peak_rss(&layer, &out);
    let ztoc_size = std::fs::metadata(&out).unwrap().len();
    let z = afterpush::ztoc::Ztoc::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(z.files.len(), ENTRIES);
    assert_eq!(z.files[ENTRIES - 1].name.len(), NAME_LEN);
    // The zTOC is 135 MiB. Entries released only once half were encoded peaked 32.7 MiB
    // over it and the process's own; released an eighth at a time, 1.0 MiB.
    let over = rss.saturating_sub(base + ztoc_size);
    eprintln!(
        "{ENTRIES} entries: peak RSS {:.1} MiB, {:.1} MiB of it the process's own, zTOC {:.1} MiB: {:.1} MiB over",
        rss as f64 / 1048576.0,
        base as f64 / 1048576.0,
        ztoc_size as f64 / 1048576.0,
        over as f64 / 1048576.0
    );
    assert!(
        over < 20 << 20,
        "{ENTRIES} entries: peak RSS {rss} bytes, {base} of them the process's own, for a {ztoc_size}-byte zTOC"
    );
}
