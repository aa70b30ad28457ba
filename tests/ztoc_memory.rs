//! Peak memory of `afterpush ztoc create` on a layer shaped like a toolchain archived
//! by GNU tar in its POSIX format: tens of thousands of entries with long paths, each
//! with its own PAX records (GNU tar writes `atime` and `ctime` for every entry), and
//! 1.3 GB of tar. Measured as the user runs it: the command's peak RSS as GNU time
//! (`/usr/bin/time`) reports it. No timed assertions.

use afterpush::ztoc::{LayerCompression, ZtocBuilder, ZtocOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// About the entries of a Rust toolchain.
const ENTRIES: usize = 53_500;
/// Bytes of file data in the tar (1.3 GB, as a toolchain), all zeros: the gzip layer is
/// small and quick to write. At level 2 (zlib-rs's `deflate_fast`) a deflate block
/// ends every 16 Ki symbols, about 4 MiB of zeros, so the zTOC gets a checkpoint every
/// 4 MiB or so, as for any content (level 1 makes far longer blocks).
const DATA: u64 = 1_300_000_000;
/// Files that hold half the data between them (a toolchain's big libraries).
const BIG_FILES: usize = 40;
/// One entry in this many is a directory.
const DIR_EVERY: usize = 25;

/// The memory budget of a zTOC build is 32 MiB plus the zTOC: the process's own memory
/// plus what the build takes. The release binary's own, measured as here on a tiny
/// layer, is 9.4 MiB (rounded up here), which leaves the build 22 MiB beside the zTOC.
/// The test runs the dev binary, since a fat-LTO release build takes CI many minutes;
/// its own memory is larger (more code, mapped from a bigger binary), but the build's
/// allocations are the same. So the test holds what the build adds to the process's
/// own to the same 22 MiB plus the zTOC.
const RELEASE_OWN_MIB: u64 = 10;
const BUDGET_BESIDE_ZTOC_MIB: u64 = 32;

/// The path of entry `i`: directories and names as long as a toolchain's sources have
/// (70 to 150 bytes), within a ustar header's 155-byte prefix and 100-byte name.
fn entry_path(i: usize) -> String {
    let dir = format!(
        "toolchain/lib/rustlib/src/rust/library/crate_{:02}/src/module_{:02}/submodule_{:02}",
        i / 2000,
        i / 100 % 20,
        i / 10 % 10
    );
    if i % DIR_EVERY == 0 {
        format!("{dir}/directory_{i:06}/")
    } else {
        format!("{dir}/source_file_{i:06}{}.rs", "_part".repeat(i % 11))
    }
}

/// Writes the layer, streaming: `entries` entries, each after a PAX header of its own,
/// with `data` bytes of zeros between the files, gzip-compressed at level 2.
fn write_toolchain_like_layer(path: &Path, entries: usize, data: u64) {
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        flate2::Compression::new(2),
    );
    let mut b = tar::Builder::new(gz);
    let files = entries - entries.div_ceil(DIR_EVERY);
    let big_size = data / 2 / BIG_FILES as u64;
    let small_size = (data - big_size * BIG_FILES.min(files) as u64) / files.max(1) as u64;
    let big_every = (entries / BIG_FILES).max(1);
    for i in 0..entries {
        let atime = format!("1796633089.{:09}", i * 7919 % 1_000_000_000);
        b.append_pax_extensions([
            ("atime", atime.as_bytes()),
            ("ctime", b"1779295726.123456789".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_779_295_726);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root").unwrap();
        h.set_groupname("root").unwrap();
        let size = if i % DIR_EVERY == 0 {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            0
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            if i % big_every == 1 {
                big_size
            } else {
                small_size
            }
        };
        h.set_size(size);
        b.append_data(&mut h, entry_path(i), std::io::repeat(0).take(size))
            .unwrap();
    }
    let buffered = b.into_inner().unwrap().finish().unwrap();
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .unwrap()
        .flush()
        .unwrap();
}

/// Peak RSS in bytes of `afterpush ztoc create layer -o out`, by GNU time.
fn ztoc_create_peak_rss(layer: &Path, out: &Path) -> u64 {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_afterpush"))
        .args(["ztoc".as_ref(), "create".as_ref(), layer.as_os_str()])
        .args(["-o".as_ref(), out.as_os_str()])
        .output()
        .expect("GNU time is required by this test: apt-get install -y time");
    assert!(
        output.status.success(),
        "afterpush ztoc create {}: {}",
        layer.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(report.path()).unwrap();
    text.trim().parse::<u64>().unwrap() * 1024
}

/// What [`ZtocBuilder::memory_needed`] reports, the figure the indexer's memory budget
/// reserves for a layer, once the whole layer is fed.
fn memory_needed(layer: &Path) -> u64 {
    let mut file = std::fs::File::open(layer).unwrap();
    let mut b = ZtocBuilder::new(LayerCompression::Gzip, ZtocOptions::default());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return b.memory_needed();
        }
        b.feed(&buf[..n]).unwrap();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

#[test]
fn create_holds_a_toolchain_like_layer_with_pax_records_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (tiny, layer) = (
        dir.path().join("tiny.tar.gz"),
        dir.path().join("big.tar.gz"),
    );
    write_toolchain_like_layer(&tiny, 2, 0);
    write_toolchain_like_layer(&layer, ENTRIES, DATA);
    let own = ztoc_create_peak_rss(&tiny, &dir.path().join("tiny.ztoc"));
    let out = dir.path().join("big.ztoc");
    let peak = ztoc_create_peak_rss(&layer, &out);

    let bytes = std::fs::read(&out).unwrap();
    let ztoc_size = bytes.len() as u64;
    let z = afterpush::ztoc::Ztoc::from_bytes(&bytes).unwrap();
    drop(bytes);
    assert_eq!(z.files.len(), ENTRIES);
    assert!(z.uncompressed_archive_size as u64 > DATA);
    for i in [0, 1, ENTRIES / 2, ENTRIES - 1] {
        let f = &z.files[i];
        assert_eq!(f.name, entry_path(i));
        assert_eq!(
            f.xattrs.keys().collect::<Vec<_>>(),
            ["atime", "ctime"],
            "{}",
            f.name
        );
    }
    let spans = z.span_digests.len();
    drop(z);

    let allowed = BUDGET_BESIDE_ZTOC_MIB - RELEASE_OWN_MIB;
    let used = peak.saturating_sub(own);
    let needed = memory_needed(&layer);
    eprintln!(
        "{ENTRIES} entries, {spans} spans, zTOC {:.1} MiB: peak RSS {:.1} MiB, {:.1} MiB of it the process's own; the build took {:.1} MiB, allowed {allowed} MiB + the zTOC = {:.1} MiB; memory_needed {:.1} MiB",
        mib(ztoc_size),
        mib(peak),
        mib(own),
        mib(used),
        mib((allowed << 20) + ztoc_size),
        mib(needed)
    );
    // The indexer admits layers by `memory_needed`: what the build really takes must fit
    // in it.
    assert!(
        used <= needed,
        "the build took {used} bytes beside the process's own, memory_needed says {needed}"
    );
    assert!(
        used <= (allowed << 20) + ztoc_size,
        "the build took {used} bytes beside the process's own {own}, over {allowed} MiB + the {ztoc_size}-byte zTOC"
    );
}
