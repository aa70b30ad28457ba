//! zTOC build vs plain inflate on a >= 200 MB real-world gzip layer generated in the run
//! (a pigz-compressed tar of the Rust toolchain). Each phase runs in a child process so
//! its peak RSS (VmHWM) is its own. Prints both times, the ratio, throughput, peak RSS.
//!
//! `cargo bench --bench ztoc` (set `ZTOC_BENCH_LAYER=path.tar.gz` to reuse a layer,
//! `ZTOC_BENCH_RUNS` for the number of alternating runs, 5 by default).

#[path = "../tests/support/peak_rss.rs"]
mod peak_rss;

use peak_rss::peak_rss_kib;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// User + system CPU seconds of this process (the machine may be shared: CPU time is
/// the steadier figure, wall time the honest one; both are printed).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of proc(5), counted from after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Child: SHA-256 of the whole blob (the span digests' share of the cost).
fn phase_sha(layer: &Path) {
    use sha2::Digest;
    let data = std::fs::read(layer).unwrap();
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let d = sha2::Sha256::digest(&data);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{d:x}");
    println!("RESULT {secs} {} 0 0 {}", peak_rss_kib(), cpu_secs() - cpu0);
}

/// Child: plain zlib-rs inflate (flate2, zlib-rs backend) of the whole layer.
fn phase_inflate(layer: &Path) {
    let file = std::fs::File::open(layer).unwrap();
    let mut dec =
        flate2::bufread::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let start = Instant::now();
    let cpu0 = cpu_secs();
    loop {
        let n = dec.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT {secs} {} {total} 0 {}",
        peak_rss_kib(),
        cpu_secs() - cpu0
    );
}

/// Child: the zTOC build, streaming the layer in 1 MiB chunks, encoded as the CLI and the
/// indexer encode it ([`afterpush::ztoc::ZtocBuilder::finish_encoded`]).
fn phase_ztoc(layer: &Path) {
    use afterpush::ztoc::{LayerCompression, ZtocBuilder, ZtocOptions};
    let mut file = std::fs::File::open(layer).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let mut b = ZtocBuilder::new(LayerCompression::Gzip, ZtocOptions::default());
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        b.feed(&buf[..n]).unwrap();
    }
    // As `afterpush ztoc create` and the indexer finish it.
    let z = b.finish_encoded().unwrap();
    let (uncompressed, entries, spans) = (z.uncompressed_archive_size, z.entries, z.spans);
    let bytes = z.bytes;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT {secs} {} {uncompressed} {} {} {entries} {spans}",
        peak_rss_kib(),
        bytes.len(),
        cpu_secs() - cpu0,
    );
}

/// Child: the bare zran loop (libz-rs-sys, 32 KiB output at a time) with `flush`,
/// no hashing and no tar parsing: attributes the zTOC build's cost.
fn phase_raw(layer: &Path, flush: i32) {
    use libz_rs_sys as z;
    let data = std::fs::read(layer).unwrap();
    let mut ring = vec![0u8; 64 * 1024];
    let mut pos = 0usize;
    let mut total = 0u64;
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let mut strm: Box<z::z_stream> = Box::default();
    unsafe {
        z::inflateInit2_(
            &mut *strm,
            31,
            z::zlibVersion(),
            std::mem::size_of::<z::z_stream>() as i32,
        );
        let mut at = 0usize;
        let mut boundaries = 0u64;
        loop {
            if pos == ring.len() {
                pos = 0;
            }
            let room = (ring.len() - pos).min(32 * 1024);
            let chunk = (data.len() - at).min(1 << 20);
            strm.next_in = data[at..].as_ptr();
            strm.avail_in = chunk as u32;
            strm.next_out = ring[pos..].as_mut_ptr();
            strm.avail_out = room as u32;
            let ret = z::inflate(&mut *strm, flush);
            at += chunk - strm.avail_in as usize;
            pos += room - strm.avail_out as usize;
            total += (room - strm.avail_out as usize) as u64;
            if strm.data_type & 128 != 0 {
                boundaries += 1;
            }
            if ret == z::Z_STREAM_END {
                if at >= data.len() {
                    break;
                }
                z::inflateReset2(&mut *strm, 31);
            } else {
                assert!(ret == z::Z_OK || ret == z::Z_BUF_ERROR, "inflate {ret}");
            }
        }
        z::inflateEnd(&mut *strm);
        eprintln!("{boundaries} stops at block boundaries");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT {secs} {} {total} 0 {}",
        peak_rss_kib(),
        cpu_secs() - cpu0
    );
}

fn make_layer(dir: &Path) -> PathBuf {
    if let Ok(p) = std::env::var("ZTOC_BENCH_LAYER") {
        return PathBuf::from(p);
    }
    let sysroot = String::from_utf8(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sysroot = sysroot.trim();
    let layer = dir.join("toolchain.tar.gz");
    eprintln!(
        "generating {} from {sysroot} with tar | pigz ...",
        layer.display()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{sysroot}' -cf - . | pigz -c > '{}'",
            layer.display()
        ))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "tar | pigz failed (apt-get install -y tar pigz)"
    );
    layer
}

fn run_child(phase: &str, layer: &Path) -> Vec<f64> {
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let out = Command::new(exe)
        .args(["--phase", phase])
        .arg(layer)
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{phase}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("RESULT line");
    let mut v: Vec<f64> = line[7..].split(' ').map(|x| x.parse().unwrap()).collect();
    v.push(wall);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let layer = Path::new(&args[i + 2]);
        match args[i + 1].as_str() {
            "inflate" => phase_inflate(layer),
            "ztoc" => phase_ztoc(layer),
            "sha" => phase_sha(layer),
            "raw-block" => phase_raw(layer, libz_rs_sys::Z_BLOCK),
            "raw-noflush" => phase_raw(layer, libz_rs_sys::Z_NO_FLUSH),
            other => panic!("unknown phase {other}"),
        }
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark has no place in the test suite's time (criterion's convention).
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run with `cargo bench --bench ztoc`");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = make_layer(dir.path());
    let size = std::fs::metadata(&layer).unwrap().len();
    println!(
        "layer: {} ({:.1} MB compressed)",
        layer.display(),
        size as f64 / 1e6
    );
    if size < 200_000_000 {
        println!("WARNING: the layer is smaller than the 200 MB the benchmark asks for");
    }
    // Warm the page cache so neither phase pays for the disk.
    let _ = std::fs::read(&layer).map(|b| b.len());
    let mut inflate_secs = Vec::new();
    let mut ztoc_secs = Vec::new();
    let (mut inflate_cpu, mut ztoc_cpu) = (Vec::new(), Vec::new());
    let (mut inflate_rss, mut ztoc_rss, mut ztoc_size, mut uncompressed) = (0.0, 0.0, 0.0, 0.0);
    let (mut entries, mut spans) = (0.0, 0.0);
    // Alternating runs, best of each: a shared machine's noise only ever adds time.
    let runs: usize = std::env::var("ZTOC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for _ in 0..runs {
        let a = run_child("inflate", &layer);
        inflate_secs.push(a[0]);
        inflate_cpu.push(a[4]);
        inflate_rss = a[1];
        let b = run_child("ztoc", &layer);
        ztoc_secs.push(b[0]);
        ztoc_rss = b[1];
        uncompressed = b[2];
        ztoc_size = b[3];
        ztoc_cpu.push(b[4]);
        entries = b[5];
        spans = b[6];
    }
    if std::env::var_os("ZTOC_BENCH_ATTRIBUTION").is_some() {
        for phase in ["raw-noflush", "raw-block", "sha"] {
            let r = run_child(phase, &layer);
            println!(
                "{phase}: {:.3} s wall, {:.2} s CPU ({:.2}x inflate CPU)",
                r[0],
                r[4],
                r[4] / inflate_cpu[0]
            );
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (ti, tz) = (best(&inflate_secs), best(&ztoc_secs));
    println!(
        "uncompressed: {:.1} MB, {} entries, {} spans, zTOC {:.2} MiB",
        uncompressed / 1e6,
        entries,
        spans,
        ztoc_size / 1048576.0
    );
    println!(
        "plain inflate (flate2/zlib-rs): {ti:.3} s  {:.0} MB/s compressed, {:.0} MB/s uncompressed, peak RSS {:.1} MiB",
        size as f64 / 1e6 / ti,
        uncompressed / 1e6 / ti,
        inflate_rss / 1024.0
    );
    println!(
        "zTOC build:                     {tz:.3} s  {:.0} MB/s compressed, {:.0} MB/s uncompressed, peak RSS {:.1} MiB",
        size as f64 / 1e6 / tz,
        uncompressed / 1e6 / tz,
        ztoc_rss / 1024.0
    );
    println!(
        "ratio zTOC/inflate: {:.3} wall, {:.3} CPU incl. the span-hashing thread (target <= 1.15); wall runs: inflate {inflate_secs:?}, zTOC {ztoc_secs:?}; CPU runs: inflate {inflate_cpu:?}, zTOC {ztoc_cpu:?}",
        tz / ti,
        best(&ztoc_cpu) / best(&inflate_cpu)
    );
    let budget = 32.0 * 1024.0 + ztoc_size / 1024.0;
    println!(
        "peak RSS zTOC build: {:.1} MiB vs budget 32 MiB + zTOC {:.1} MiB = {:.1} MiB ({})",
        ztoc_rss / 1024.0,
        ztoc_size / 1048576.0,
        budget / 1024.0,
        if ztoc_rss <= budget { "within" } else { "OVER" }
    );
}
