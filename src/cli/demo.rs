//! `afterpush demo`: generates a sample multi-arch image with real layers into an OCI
//! image layout (no registry, no cloud) and prints its manifest tree. Later issues
//! replay the push events through the three handlers here.

use crate::oci::{annotation, is_attestation_descriptor, ManifestSummary};
use crate::registry::layout::LayoutRepository;
use crate::registry::Repository;
use crate::sample::{self, LayerCompression, ManifestFormat, SamplePlatform, SampleSpec};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the layout in DIR (created if missing) instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Platforms of the sample image.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linux/amd64,linux/arm64,linux/arm/v7"
    )]
    pub platforms: Vec<String>,
    /// Uncompressed content bytes of each layer (one layer per value).
    #[arg(long, value_delimiter = ',', default_value = "65536,1048576")]
    pub layer_sizes: Vec<u64>,
    /// Docker v2 media types (a manifest list) instead of OCI ones.
    #[arg(long)]
    pub docker: bool,
    /// Leave layers as plain tar instead of gzip.
    #[arg(long)]
    pub uncompressed: bool,
    /// Seed of the generator (the same seed gives the same digests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub const DEMO_TAG: &str = "demo";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let platforms = args
        .platforms
        .iter()
        .map(|p| p.parse::<SamplePlatform>())
        .collect::<Result<Vec<_>, _>>()?;
    let spec = SampleSpec {
        seed: args.seed,
        platforms,
        layer_sizes: args.layer_sizes.clone(),
        compression: if args.uncompressed {
            LayerCompression::None
        } else {
            LayerCompression::Gzip
        },
        format: if args.docker {
            ManifestFormat::Docker
        } else {
            ManifestFormat::Oci
        },
        attestations: true,
    };
    let temp;
    let dir = match &args.keep {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("afterpush-demo-")
                .tempdir()?;
            temp.path().join("layout")
        }
    };
    let repo = LayoutRepository::open_or_create(&dir)
        .with_context(|| format!("creating the OCI layout {}", dir.display()))?;
    let spinner = ProgressBar::with_draw_target(
        None,
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner.set_message(format!(
        "generating a {}-platform sample image",
        spec.platforms.len()
    ));
    let written = sample::write_multi_arch(&repo, &spec, Some(DEMO_TAG)).await?;
    spinner.finish_and_clear();
    println!(
        "Sample image written to oci:{}:{DEMO_TAG} ({} platforms, {} attestations)\n",
        dir.display(),
        written.images.len(),
        written.attestations.len()
    );
    print!("{}", manifest_tree(&repo, DEMO_TAG).await?);
    match &args.keep {
        Some(_) => println!(
            "\nKept. Try: skopeo inspect --raw oci:{}:{DEMO_TAG}",
            dir.display()
        ),
        None => println!("\n(temporary layout removed; --keep DIR keeps it)"),
    }
    Ok(())
}

/// The manifest tree of `reference`, read back from the repository: index -> platform
/// manifests -> config and layers, with media types and sizes.
pub async fn manifest_tree(repo: &dyn Repository, reference: &str) -> anyhow::Result<String> {
    let root = repo.get_manifest(reference).await?;
    let summary = ManifestSummary::parse(reference, &root.bytes)?;
    let mut out = format!(
        "{}:{reference}  {}  {}  {} B\n",
        repo.location(),
        root.media_type,
        root.digest,
        root.bytes.len()
    );
    let blobs_of = |s: &ManifestSummary, prefix: &str, out: &mut String| {
        let items: Vec<(&str, _)> = s
            .config
            .iter()
            .map(|c| ("config", c))
            .chain(s.layers.iter().map(|l| ("layer", l)))
            .collect();
        for (i, (kind, d)) in items.iter().enumerate() {
            let branch = if i + 1 == items.len() {
                "└──"
            } else {
                "├──"
            };
            out.push_str(&format!(
                "{prefix}{branch} {kind:<6} {}  {}  {} B\n",
                d.media_type, d.digest, d.size
            ));
        }
    };
    if summary.manifests.is_empty() {
        blobs_of(&summary, "", &mut out);
        return Ok(out);
    }
    for (i, child) in summary.manifests.iter().enumerate() {
        let last = i + 1 == summary.manifests.len();
        let label = if is_attestation_descriptor(child) {
            format!(
                "attestation of {}",
                child
                    .annotations
                    .get(annotation::DOCKER_REFERENCE_DIGEST)
                    .map(|d| &d[..19.min(d.len())])
                    .unwrap_or("?")
            )
        } else {
            child
                .platform
                .as_ref()
                .map(|p| {
                    let mut s = format!("{}/{}", p.os(), p.architecture());
                    if let Some(v) = p.variant() {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                })
                .unwrap_or_else(|| "(no platform)".into())
        };
        out.push_str(&format!(
            "{} {label}  {}  {}  {} B\n",
            if last { "└──" } else { "├──" },
            child.media_type,
            child.digest,
            child.size
        ));
        let m = repo.get_manifest(&child.digest).await?;
        let s = ManifestSummary::parse(&child.digest, &m.bytes)?;
        blobs_of(&s, if last { "    " } else { "│   " }, &mut out);
    }
    Ok(out)
}
