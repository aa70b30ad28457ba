//! `afterpush copy SRC DST`: copies an image with every platform and attestation
//! (optionally its referrers) between layouts, archives and registries.
// These doc comments are also clap's --help text, where `[:TAG]` means "optional":
// rustdoc must not read the brackets as intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use crate::registry::copy::{copy_image, CopyEvent, CopyOptions};
use crate::registry::open::{open_repository, open_source, OpenSettings};
use crate::registry::{ImageRef, Location};
use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// `afterpush copy`: source, destination and how to copy.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Source: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://HOST/REPO[:TAG|@sha256:…]
    pub src: String,
    /// Destination, in the same forms. Without a tag, the source's tag is used.
    pub dst: String,
    /// Also copy the referrers (signatures, SOCI indexes, …) of every manifest copied.
    #[arg(long)]
    pub referrers: bool,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// Blobs this large get their own progress bar.
const OWN_BAR_BYTES: u64 = 1024 * 1024;

/// Progress bars on a TTY; nothing otherwise.
fn progress_sink() -> (MultiProgress, ProgressBar, crate::registry::copy::Progress) {
    let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let total = multi.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    total.set_prefix("total");
    let blob_style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes}")
        .expect("valid template")
        .progress_chars("=> ");
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let counts = Mutex::new((0usize, 0usize, 0usize));
    let (m, t) = (multi.clone(), total.clone());
    let sink = Arc::new(move |event: CopyEvent| match event {
        CopyEvent::BlobStarted { digest, size } => {
            t.inc_length(size);
            if size >= OWN_BAR_BYTES {
                let bar = m.add(ProgressBar::new(size));
                bar.set_style(blob_style.clone());
                bar.set_prefix(digest.hex()[..8].to_string());
                bars.lock().unwrap().insert(digest.hex(), bar);
            }
        }
        CopyEvent::BlobBytes { digest, bytes } => {
            t.inc(bytes);
            if let Some(bar) = bars.lock().unwrap().get(&digest.hex()) {
                bar.inc(bytes);
            }
        }
        CopyEvent::BlobDone {
            digest, skipped, ..
        } => {
            if let Some(bar) = bars.lock().unwrap().remove(&digest.hex()) {
                bar.finish_and_clear();
            }
            let mut c = counts.lock().unwrap();
            if skipped {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
            t.set_message(format!(
                "{} blobs copied, {} present, {} manifests",
                c.0, c.1, c.2
            ));
        }
        CopyEvent::ManifestPushed { .. } => {
            let mut c = counts.lock().unwrap();
            c.2 += 1;
            t.set_message(format!(
                "{} blobs copied, {} present, {} manifests",
                c.0, c.1, c.2
            ));
        }
    });
    (multi, total, sink)
}

/// Runs `afterpush copy` with progress bars on a terminal.
pub async fn run(args: CopyArgs) -> anyhow::Result<()> {
    let src_ref: ImageRef = args.src.parse()?;
    let dst_ref: ImageRef = args.dst.parse()?;
    // The same AFTERPUSH_REGISTRY_* settings as every other verb, for both ends.
    let settings = OpenSettings::from_env()?;
    let (src, reference) = open_source(&src_ref, &settings)
        .await
        .with_context(|| format!("opening {src_ref}"))?;
    let dst_tag = dst_ref.tag.clone().or_else(|| src_ref.tag.clone());
    if dst_tag.is_none() && dst_ref.digest.is_none() {
        bail!("name the destination tag: {dst_ref}:TAG (the source {src_ref} has none)");
    }
    let dst = open_repository(&dst_ref, &settings.creating())
        .await
        .with_context(|| format!("opening {dst_ref}"))?;
    if let Some(want) = &dst_ref.digest {
        let got = src.resolve(&reference).await?.digest;
        if &got != want {
            bail!("{dst_ref} names digest {want}, but {src_ref} is {got}");
        }
    }
    let mount_from = match (&src_ref.location, &dst_ref.location) {
        (
            Location::Registry {
                host: a,
                repository: from,
            },
            Location::Registry {
                host: b,
                repository: to,
            },
        ) if a == b && from != to => Some(from.clone()),
        _ => None,
    };
    let (_multi, total, progress) = progress_sink();
    let options = CopyOptions {
        referrers: args.referrers,
        mount_from,
        concurrency: args.concurrency,
        progress: Some(progress),
    };
    let copied = async {
        let report = copy_image(
            src.as_ref(),
            dst.as_ref(),
            &reference,
            dst_tag.as_deref(),
            &options,
        )
        .await
        .with_context(|| format!("copying {src_ref} to {dst_ref}"))?;
        dst.commit()
            .await
            .with_context(|| format!("writing {dst_ref}"))?;
        anyhow::Ok(report)
    }
    .await;
    let report = match copied {
        Ok(report) => report,
        Err(e) => {
            super::discard_after_failure(dst.as_ref()).await;
            return Err(e);
        }
    };
    total.finish_and_clear();
    let root = report.root.expect("a finished copy has a root");
    println!(
        "copied {} ({}) to {dst_ref}: {} manifests, {} blobs ({} bytes) copied, {} already present{}",
        root.digest,
        root.media_type,
        report.manifests,
        report.blobs_copied,
        report.bytes_copied,
        report.blobs_skipped,
        if args.referrers {
            format!(", {} referrers", report.referrers)
        } else {
            String::new()
        }
    );
    Ok(())
}
