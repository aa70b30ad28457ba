//! `afterpush soci create|list|info`: SOCI indexes for images in layouts, archives and
//! registries, with the same settings as the `soci-indexer` Lambda.
// These doc comments are also clap's --help text, where `[:TAG]` means "optional":
// rustdoc must not read the brackets as intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use crate::oci::gojson::{GoDescriptor, GoIndex, GoManifest};
use crate::oci::{annotation, media, ManifestSummary, Sha256Digest};
use crate::registry::copy::{copy_image, CopyOptions};
use crate::registry::open::{open_repository, OpenSettings};
use crate::registry::{read_blob, ImageRef, Repository};
use crate::soci::{
    self, IndexVersion, NoZtocCache, PlatformSelection, ProgressEvent, S3ZtocCache, SociSettings,
    TagMode, ZtocCache,
};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `afterpush soci ...`
#[derive(Debug, Args)]
pub struct SociArgs {
    /// The `soci` verb to run.
    #[command(subcommand)]
    pub command: SociCommand,
}

/// The verbs of `afterpush soci`.
#[derive(Debug, Subcommand)]
pub enum SociCommand {
    /// Build SOCI indexes for an image and publish them (v2: a SOCI-enabled image index).
    Create(CreateArgs),
    /// Show each platform of an image and its SOCI index, if any.
    List {
        /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://HOST/REPO[:TAG|@DIGEST].
        image: String,
    },
    /// Show a SOCI index: its zTOCs and the layers they describe.
    Info {
        /// A reference to the SOCI index manifest (usually `...@sha256:...`).
        index: String,
    },
}

/// `afterpush soci create`: the image and the indexer settings (the Lambda's variables as flags).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://HOST/REPO[:TAG|@DIGEST].
    pub image: String,
    /// Copy the image here first and publish the SOCI indexes there (e.g. from the
    /// oci-archive `docker buildx build -o type=oci,dest=image.tar` wrote, into ECR).
    #[arg(long)]
    pub push_to: Option<String>,
    /// SOCI index format: `v2` (a SOCI-enabled image index) or `v1` (a referrer of each platform manifest).
    #[arg(long, value_enum, env = "SOCI_INDEX_VERSION", default_value = "v2")]
    pub index_version: IndexVersion,
    /// Where the v2 index is tagged: `suffix` (`<tag>-soci`), `in-place` or `none`.
    #[arg(long, value_enum, env = "SOCI_TAG_MODE", default_value = "suffix")]
    pub tag_mode: TagMode,
    /// zTOC span size (`4MiB` or bytes), 64 KiB to 1 GiB.
    #[arg(long, env = "SPAN_SIZE", default_value = "4MiB", value_parser = super::ztoc::parse_span_size_arg)]
    pub span_size: u64,
    /// Layers smaller than this (`10MiB` or bytes) get no zTOC.
    #[arg(long, env = "MIN_LAYER_SIZE", default_value = "10MiB", value_parser = parse_size_arg)]
    pub min_layer_size: u64,
    /// Platforms to index (`linux/amd64`), repeatable; all when absent.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Layers indexed at once.
    #[arg(long, env = "LAYER_CONCURRENCY", default_value_t = 4, value_parser = parse_concurrency_arg)]
    pub layer_concurrency: usize,
    /// Reuse zTOCs from (and store them in) this S3 bucket.
    #[arg(long, env = "ZTOC_CACHE_BUCKET")]
    pub ztoc_cache_bucket: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::settings::parse_size("MIN_LAYER_SIZE", s).map_err(|e| e.problem)
}

fn parse_concurrency_arg(s: &str) -> Result<usize, String> {
    crate::settings::parse_count("LAYER_CONCURRENCY", s, 1..=64).map_err(|e| e.problem)
}

/// Runs `afterpush soci create|list|info`.
pub async fn run(args: SociArgs) -> anyhow::Result<()> {
    match args.command {
        SociCommand::Create(a) => create(a).await,
        SociCommand::List { image } => list(&image).await,
        SociCommand::Info { index } => info(&index).await,
    }
}

async fn open(reference: &str, create: bool) -> anyhow::Result<(ImageRef, Box<dyn Repository>)> {
    let r: ImageRef = reference.parse()?;
    let mut settings = OpenSettings::from_env()?;
    settings.create = create;
    let repo = open_repository(&r, &settings)
        .await
        .with_context(|| format!("opening {reference}"))?;
    Ok((r, repo))
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let settings = SociSettings {
        span_size: args.span_size,
        min_layer_size: args.min_layer_size,
        layer_concurrency: args.layer_concurrency.max(1),
        index_version: args.index_version,
        tag_mode: args.tag_mode,
        platforms: if args.platforms.is_empty() {
            PlatformSelection::All
        } else {
            PlatformSelection::Only(args.platforms.clone())
        },
        ztoc_cache_bucket: args.ztoc_cache_bucket.clone(),
        ..SociSettings::from_env()?
    };
    let (src_ref, src) = open(&args.image, false).await?;
    let (target_ref, target): (ImageRef, Box<dyn Repository>) = match &args.push_to {
        Some(dst) => {
            let (dst_ref, dst_repo) = open(dst, true).await?;
            let reference = src_ref
                .reference()
                .context("the image needs a tag or digest")?;
            let tag = dst_ref.tag.clone().or(src_ref.tag.clone());
            eprintln!("copying {} to {dst}", args.image);
            let copied = async {
                copy_image(
                    src.as_ref(),
                    dst_repo.as_ref(),
                    &reference,
                    tag.as_deref(),
                    &CopyOptions::default(),
                )
                .await?;
                dst_repo.commit().await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = copied {
                super::discard_after_failure(dst_repo.as_ref()).await;
                return Err(e);
            }
            let dst_ref = ImageRef { tag, ..dst_ref };
            (dst_ref, dst_repo)
        }
        None => (src_ref, src),
    };
    let reference = target_ref
        .reference()
        .context("the image needs a tag or digest")?;
    let cache: Box<dyn ZtocCache> = match &settings.ztoc_cache_bucket {
        Some(bucket) => {
            let sdk = crate::aws_clients::load_sdk_config().await;
            let s3 = crate::aws_clients::ClientSettings::from_env()?.s3(&sdk, true);
            Box::new(S3ZtocCache::new(s3, bucket, &settings.ztoc_cache_prefix))
        }
        None => Box::new(NoZtocCache),
    };
    let progress = layer_progress();
    let created = async {
        let outcome = soci::create_soci(
            target.as_ref(),
            &reference,
            target_ref.tag.as_deref(),
            &settings,
            cache.as_ref(),
            Some(progress),
        )
        .await?;
        target.commit().await?;
        anyhow::Ok(outcome)
    }
    .await;
    let outcome = match created {
        Ok(outcome) => outcome,
        Err(e) => {
            super::discard_after_failure(target.as_ref()).await;
            return Err(e);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    if let Some(reason) = &outcome.skipped {
        println!("nothing to do: {reason}");
    }
    for p in &outcome.platforms {
        match &p.soci_index {
            Some(idx) => println!(
                "{:<16} SOCI index {idx} ({} bytes): {} zTOCs ({} reused), {} layers skipped",
                p.platform,
                p.soci_index_size.unwrap_or(0),
                p.ztocs,
                p.ztocs_from_cache,
                p.layers_skipped
            ),
            None => println!(
                "{:<16} no SOCI index: {} layers, none indexable",
                p.platform, p.layers_skipped
            ),
        }
    }
    if let Some(out) = &outcome.output {
        let location = target.location();
        match &outcome.tag {
            Some(tag) => println!("SOCI-enabled index {out} tagged {location}:{tag}"),
            None => println!("SOCI-enabled index {location}@{out}"),
        }
    }
    println!(
        "{:.1} MB of layers read in {:.2} s",
        outcome.bytes_read as f64 / 1e6,
        outcome.seconds
    );
    Ok(())
}

/// One bar per layer being indexed; hidden when stderr is not a terminal.
fn layer_progress() -> soci::Progress {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let by_layer: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Arc::new(move |event| {
        let mut by_layer = by_layer.lock().expect("progress lock");
        match event {
            ProgressEvent::LayerStarted { layer, size } => {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(crate::format::short_digest(&layer));
                by_layer.insert(layer.to_string(), bar);
            }
            ProgressEvent::LayerBytes { layer, bytes } => {
                if let Some(bar) = by_layer.get(&layer.to_string()) {
                    bar.inc(bytes);
                }
            }
            ProgressEvent::LayerFinished { layer, from_cache } => {
                if let Some(bar) = by_layer.remove(&layer.to_string()) {
                    bar.finish_with_message(if from_cache { "cached" } else { "built" });
                }
            }
        }
    })
}

async fn list(image: &str) -> anyhow::Result<()> {
    let (r, repo) = open(image, false).await?;
    let reference = r.reference().context("the image needs a tag or digest")?;
    let top = repo.get_manifest(&reference).await?;
    let summary = ManifestSummary::parse(image, &top.bytes)?;
    if !media::is_index(summary.effective_media_type(Some(&top.media_type))) {
        let referrers = repo
            .referrers(&top.digest, Some(media::SOCI_INDEX_V1))
            .await?;
        println!(
            "{} {}",
            top.digest,
            if referrers.is_empty() {
                "no SOCI index".to_string()
            } else {
                format!("SOCI v1 index {}", referrers[0].digest)
            }
        );
        return Ok(());
    }
    let index: GoIndex = serde_json::from_slice(&top.bytes)?;
    // One pass over the children, and one referrers query for all of those without a
    // v2 SOCI index: per child, both were linear in the children (quadratic in all).
    let v2_of: HashMap<&str, &GoDescriptor> = index
        .manifests
        .iter()
        .filter_map(|s| {
            s.annotations
                .get(annotation::SOCI_IMAGE_MANIFEST_DIGEST)
                .map(|image| (image.as_str(), s))
        })
        .collect();
    let images: Vec<&GoDescriptor> = index
        .manifests
        .iter()
        .filter(|d| d.artifact_type.as_deref() != Some(media::SOCI_INDEX_V2))
        .collect();
    let without_v2 = images
        .iter()
        .filter(|d| !media::is_index(&d.media_type) && !v2_of.contains_key(d.digest.as_str()))
        .map(|d| d.digest.parse())
        .collect::<Result<Vec<Sha256Digest>, _>>()?;
    let mut v1_of: HashMap<String, String> = HashMap::new();
    for (digest, referrers) in without_v2.iter().zip(
        repo.referrers_of_each(&without_v2, Some(media::SOCI_INDEX_V1))
            .await?,
    ) {
        if let Some(first) = referrers.first() {
            v1_of.insert(digest.to_string(), first.digest.clone());
        }
    }
    for d in images {
        if media::is_index(&d.media_type) {
            // Its platform, if it names one, is not an image's: its children have theirs.
            println!(
                "{:<16} {} nested image index: run soci list on its digest",
                "-", d.digest
            );
            continue;
        }
        let platform = d
            .platform
            .as_ref()
            .map(|p| p.short())
            .unwrap_or_else(|| "?".into());
        let line = match (v2_of.get(d.digest.as_str()), v1_of.get(&d.digest)) {
            (Some(s), _) => format!("SOCI v2 index {} ({} bytes)", s.digest, s.size),
            (None, Some(v1)) => format!("SOCI v1 index {v1}"),
            (None, None) => "no SOCI index".into(),
        };
        println!("{platform:<16} {} {line}", d.digest);
    }
    Ok(())
}

async fn info(index: &str) -> anyhow::Result<()> {
    let (r, repo) = open(index, false).await?;
    let reference = r
        .reference()
        .context("the SOCI index reference needs a digest or tag")?;
    let m = repo.get_manifest(&reference).await?;
    let manifest: GoManifest =
        serde_json::from_slice(&m.bytes).with_context(|| format!("{index} is not a manifest"))?;
    if !manifest
        .config
        .media_type
        .starts_with("application/vnd.amazon.soci.index.")
    {
        bail!(
            "{index} is not a SOCI index (config media type {})",
            manifest.config.media_type
        );
    }
    println!(
        "SOCI index {} ({}), built by {}",
        m.digest,
        manifest.config.media_type,
        manifest
            .annotations
            .get(annotation::SOCI_BUILD_TOOL)
            .map(String::as_str)
            .unwrap_or("?")
    );
    for z in &manifest.layers {
        // The zTOC is read whole: at most the size the SOCI index declares for it.
        let bytes = read_blob(repo.as_ref(), &z.digest.parse()?, z.size, z.size).await?;
        let ztoc =
            crate::ztoc::Ztoc::from_bytes(&bytes).with_context(|| format!("zTOC {}", z.digest))?;
        println!(
            "  zTOC {} ({} bytes) for layer {} ({}): {} entries, span {}",
            z.digest,
            z.size,
            z.annotations
                .get(annotation::SOCI_LAYER_DIGEST)
                .map(String::as_str)
                .unwrap_or("?"),
            z.annotations
                .get(annotation::SOCI_LAYER_MEDIA_TYPE)
                .map(String::as_str)
                .unwrap_or("?"),
            ztoc.files.len(),
            z.annotations
                .get(annotation::SOCI_SPAN_SIZE)
                .map(String::as_str)
                .unwrap_or("?"),
        );
    }
    Ok(())
}
