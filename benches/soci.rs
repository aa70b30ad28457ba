//! SOCI indexer benchmark. A multi-layer image of at least 500 MB (gzip) is generated into
//! the local registry (Debian's docker-registry, started here). Then, in the same run and
//! each in a child process so peak RSS is its own:
//! - baseline: download every layer from the registry and inflate it (flate2/zlib-rs), the
//!   floor any indexer pays;
//! - soci: `create_soci` (v2, no zTOC cache): stream, build zTOCs, push zTOCs and indexes.
//!
//! Prints both times, the ratio (target <= 1.2) and each phase's peak RSS (it must not
//! grow with layer size). `cargo bench --bench soci`; `SOCI_BENCH_MB` sets the size.

#[path = "../tests/support/mod.rs"]
mod support;

use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use afterpush::soci::{create_soci, NoZtocCache, SociSettings};
use futures::TryStreamExt;
use std::io::{BufRead, Read};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    support::peak_rss::peak_rss_kib() as f64 / 1024.0
}

fn repo(host: &str) -> DistributionRepository {
    DistributionRepository::connect(&RegistrySettings::default(), host, "bench").unwrap()
}

/// Downloads every layer and inflates it into a sink; returns compressed bytes read.
async fn phase_baseline(host: &str) -> u64 {
    let repo = repo(host);
    let manifest: afterpush::oci::gojson::GoManifest =
        serde_json::from_slice(&repo.get_manifest("big").await.unwrap().bytes).unwrap();
    let mut total = 0;
    for layer in &manifest.layers {
        let digest = layer.digest.parse().unwrap();
        let stream = repo.get_blob(&digest, None).await.unwrap();
        // Inflate on a blocking thread fed through the same bounded channel the indexer
        // uses, so the two phases differ only in inflate vs zTOC build.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let inflater = tokio::task::spawn_blocking(move || {
            // A BufRead over the channel's chunks (no copy, no 8 KiB re-buffering) and a
            // 1 MiB output buffer: the baseline inflates as fast as zlib-rs can, so the
            // ratio does not flatter the indexer.
            struct ChannelReader(tokio::sync::mpsc::Receiver<bytes::Bytes>, bytes::Bytes);
            impl Read for ChannelReader {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let available = self.fill_buf()?;
                    let n = buf.len().min(available.len());
                    buf[..n].copy_from_slice(&available[..n]);
                    self.consume(n);
                    Ok(n)
                }
            }
            impl BufRead for ChannelReader {
                fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
                    while self.1.is_empty() {
                        match self.0.blocking_recv() {
                            Some(b) => self.1 = b,
                            None => break,
                        }
                    }
                    Ok(&self.1)
                }
                fn consume(&mut self, n: usize) {
                    let _ = self.1.split_to(n);
                }
            }
            let mut decoder =
                flate2::bufread::MultiGzDecoder::new(ChannelReader(rx, bytes::Bytes::new()));
            let mut out = vec![0u8; 1 << 20];
            let mut inflated = 0u64;
            loop {
                let n = decoder.read(&mut out).unwrap();
                if n == 0 {
                    break inflated;
                }
                inflated += n as u64;
            }
        });
        let mut stream = stream;
        while let Some(chunk) = stream.try_next().await.unwrap() {
            total += chunk.len() as u64;
            tx.send(chunk).await.unwrap();
        }
        drop(tx);
        inflater.await.unwrap();
    }
    total
}

async fn phase_soci(host: &str) -> u64 {
    let repo = repo(host);
    let settings = SociSettings {
        layer_concurrency: 1,
        ..SociSettings::default()
    };
    let outcome = create_soci(&repo, "big", Some("big"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert!(outcome.output.is_some(), "{outcome:?}");
    outcome.bytes_read
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let host = args[i + 2].clone();
        let start = Instant::now();
        let bytes = match args[i + 1].as_str() {
            "baseline" => rt.block_on(phase_baseline(&host)),
            "soci" => rt.block_on(phase_soci(&host)),
            other => panic!("unknown phase {other}"),
        };
        println!(
            "{} {} {:.3} {:.1}",
            args[i + 1],
            bytes,
            start.elapsed().as_secs_f64(),
            peak_rss_mib()
        );
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark has no place in the test suite's time (criterion's convention).
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmark: run with `cargo bench --bench soci`");
        return;
    }
    let target_mb: u64 = std::env::var("SOCI_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(520);
    let registry = support::TestRegistry::start();
    let host = registry.host();
    // The sample content compresses about 3.25x: 8 layers of this much content give
    // about target_mb of gzip.
    let per_layer = target_mb * 1_000_000 * 13 / 4 / 8;
    let spec = SampleSpec {
        layer_sizes: vec![per_layer; 8],
        attestations: false,
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let started = Instant::now();
    let image = rt
        .block_on(sample::write_image(
            &repo(&host),
            &spec,
            &spec.platforms[0],
            Some("big"),
        ))
        .unwrap();
    let compressed: u64 = image.layers.iter().map(|l| l.blob.size).sum();
    println!(
        "image: {} layers, {:.1} MB gzip, generated in {:.1} s",
        image.layers.len(),
        compressed as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let run = |phase: &str| -> (f64, f64) {
        let line = String::from_utf8(support::stdout_of(
            std::process::Command::new(&args[0]).args(["--phase", phase, &host]),
        ))
        .unwrap();
        let f: Vec<&str> = line
            .trim()
            .rsplit('\n')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        (f[2].parse().unwrap(), f[3].parse().unwrap())
    };
    // One run each: a second SOCI run would find the image already indexed and do nothing.
    let (base_s, base_rss) = run("baseline");
    let (soci_s, soci_rss) = run("soci");
    let mb = compressed as f64 / 1e6;
    println!(
        "download + inflate : {base_s:>7.2} s  {:>6.1} MB/s  peak RSS {base_rss:.1} MiB",
        mb / base_s
    );
    println!(
        "SOCI index (v2)    : {soci_s:>7.2} s  {:>6.1} MB/s  peak RSS {soci_rss:.1} MiB",
        mb / soci_s
    );
    println!(
        "ratio soci / baseline: {:.3} (target <= 1.2)",
        soci_s / base_s
    );
}
