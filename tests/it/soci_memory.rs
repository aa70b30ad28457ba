//! The indexer's memory budget, measured as the user runs it: `afterpush soci create` on
//! an OCI layout whose zTOCs together exceed a small `MEMORY_BUDGET`, four layers at a
//! time, with the process's peak RSS read by `/usr/bin/time -v` (no timed assertions).

use afterpush::oci::gojson::GoManifest;
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Four gzip layers of 48 MiB of text each (about 15 MB compressed). At a 64 KiB span
/// each zTOC holds about 450 checkpoints of 32 KiB: 14.6 MiB, 58 MiB for the image.
const LAYERS: usize = 4;
const LAYER_CONTENT: u64 = 48 << 20;
const SPAN_SIZE: &str = "64KiB";
/// Less than the zTOCs together, more than one layer's build needs (its zTOC plus the
/// builder's 4 MiB working set and 6 MiB of chunks in flight), less than two.
const BUDGET_MIB: u64 = 40;

/// Writes a sample image of `layers` layers, tagged `app`, into a new layout at `dir`.
async fn write_layout(dir: &Path, layers: usize, content: u64) {
    let repo = LayoutRepository::open_or_create(dir).unwrap();
    let spec = SampleSpec {
        seed: 14,
        layer_sizes: vec![content; layers],
        attestations: false,
        ..SampleSpec::default()
    };
    let platform = spec.platforms[0].clone();
    sample::write_image(&repo, &spec, &platform, Some("app"))
        .await
        .unwrap();
}

/// A fresh copy of the layout (each run writes its SOCI index into its own).
fn copy_layout(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -r {}", from.display());
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
}

/// `afterpush soci create oci:<layout>:app` under `/usr/bin/time -v`, with `env`.
fn soci_create(layout: &Path, min_layer_size: &str, env: &[(&str, &str)]) -> Run {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time is missing (apt-get install time; scripts/test installs it)"
    );
    let mut command = Command::new(time);
    command
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_afterpush"))
        .args(["soci", "create", "--json", "--span-size", SPAN_SIZE])
        .args([
            "--min-layer-size",
            min_layer_size,
            "--layer-concurrency",
            "4",
        ])
        .arg(format!("oci:{}:app", layout.display()));
    for name in [
        "MEMORY_BUDGET",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let peak_rss_kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in /usr/bin/time's output: {stderr}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr,
        peak_rss_kib,
    }
}

/// The sizes of the zTOCs the SOCI index in `layout` lists.
async fn ztoc_sizes(layout: &Path, outcome: &str) -> Vec<u64> {
    let outcome: serde_json::Value = serde_json::from_str(outcome).unwrap();
    let index = outcome["platforms"][0]["soci_index"].as_str().unwrap();
    let repo = LayoutRepository::open_or_create(layout).unwrap();
    let manifest = repo.get_manifest(index).await.unwrap();
    let manifest: GoManifest = serde_json::from_slice(&manifest.bytes).unwrap();
    manifest.layers.iter().map(|l| l.size).collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test]
async fn the_budget_bounds_the_peak_rss_of_four_concurrent_layers() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_layout(&source, LAYERS, LAYER_CONTENT).await;
    let layout = |name: &str| -> PathBuf {
        let to = dir.path().join(name);
        copy_layout(&source, &to);
        to
    };

    // The process with the same code at work but (almost) no zTOC: one 64 KiB layer.
    let tiny = dir.path().join("tiny");
    write_layout(&tiny, 1, 64 << 10).await;
    let base = soci_create(&tiny, "1", &[]);
    assert!(base.ok, "{}", base.stderr);

    let unbounded_layout = layout("unbounded");
    let unbounded = soci_create(&unbounded_layout, "1", &[]);
    assert!(unbounded.ok, "{}", unbounded.stderr);

    let budget = format!("{BUDGET_MIB}MiB");
    let bounded_layout = layout("bounded");
    let bounded = soci_create(&bounded_layout, "1", &[("MEMORY_BUDGET", &budget)]);
    assert!(bounded.ok, "{}", bounded.stderr);

    let sizes = ztoc_sizes(&bounded_layout, &bounded.stdout).await;
    assert_eq!(sizes.len(), LAYERS, "{}", bounded.stdout);
    assert_eq!(
        sizes,
        ztoc_sizes(&unbounded_layout, &unbounded.stdout).await,
        "the budget changes when layers are built, not what is built"
    );
    let total: u64 = sizes.iter().sum();
    let limit_kib = base.peak_rss_kib + BUDGET_MIB * 1024;
    eprintln!(
        "peak RSS: one tiny layer {:.1} MiB; 4 layers at once {:.1} MiB; MEMORY_BUDGET={budget} {:.1} MiB (limit {:.1} MiB); zTOCs {:.1} MiB in all",
        mib(base.peak_rss_kib),
        mib(unbounded.peak_rss_kib),
        mib(bounded.peak_rss_kib),
        mib(limit_kib),
        total as f64 / 1048576.0
    );
    assert!(
        total > BUDGET_MIB << 20,
        "the zTOCs ({total} bytes) must exceed the budget for the test to mean anything"
    );
    // Without the budget, the four builds at once do exceed it: the test can fail.
    assert!(
        unbounded.peak_rss_kib > limit_kib,
        "without a budget the peak RSS ({} KiB) should exceed {limit_kib} KiB",
        unbounded.peak_rss_kib
    );
    assert!(
        bounded.peak_rss_kib <= limit_kib,
        "with MEMORY_BUDGET={budget} the peak RSS ({} KiB) exceeds the process's own {} KiB plus the budget",
        bounded.peak_rss_kib,
        base.peak_rss_kib
    );
}

#[tokio::test]
async fn a_layer_over_the_whole_budget_fails_naming_it_and_its_need() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, 1, LAYER_CONTENT).await;
    let run = soci_create(&layout, "1", &[("MEMORY_BUDGET", "12MiB")]);
    assert!(!run.ok, "{}", run.stdout);
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    let manifest = repo.get_manifest("app").await.unwrap();
    let manifest: GoManifest = serde_json::from_slice(&manifest.bytes).unwrap();
    let named = manifest
        .layers
        .iter()
        .any(|l| run.stderr.contains(&l.digest));
    assert!(named, "the error names no layer: {}", run.stderr);
    assert!(
        run.stderr.contains("needs at least")
            && run.stderr.contains("MiB of memory")
            && run.stderr.contains("memory budget of 12.0 MiB"),
        "{}",
        run.stderr
    );
    // Nothing was tagged.
    assert!(repo.get_manifest("app-soci").await.is_err());
}
