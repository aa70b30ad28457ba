//! `afterpush stitch REPO-REF --tag 1.2.3`: stitches the per-arch tags of one base tag
//! into the multi-arch target tag, and prints the index it writes (or would write).

use crate::registry::open::{open_repository, OpenSettings};
use crate::registry::ImageRef;
use crate::stitch::{self, StitchMode, StitchOutcome, StitchSettings};
use anyhow::Context;
use clap::Args;

/// `afterpush stitch`: the repository, the base tag and the stitcher settings.
#[derive(Debug, Args)]
pub struct StitchArgs {
    /// The repository: `oci:DIR`, `oci-archive:FILE`, `docker://HOST/REPO` or
    /// `HOST/REPO` (a tag in it is ignored: use --tag).
    pub repo_ref: String,
    /// The base tag: per-arch tags are named from it by --arch-tag-template.
    #[arg(long)]
    pub tag: String,
    /// Required platforms, in the order the index lists them.
    #[arg(long, env = "REQUIRED_PLATFORMS", default_value = StitchSettings::DEFAULT_REQUIRED_PLATFORMS)]
    pub platforms: String,
    /// Names of the per-arch tags: {tag} {os} {arch} {variant}.
    #[arg(long, env = "ARCH_TAG_TEMPLATE", default_value = stitch::ArchTagTemplate::DEFAULT)]
    pub arch_tag_template: String,
    /// Name of the stitched tag: {tag}.
    #[arg(long, env = "TARGET_TAG_TEMPLATE", default_value = stitch::TargetTagTemplate::DEFAULT)]
    pub target_tag_template: String,
    /// `complete`: write only when every required platform exists; `partial`: write
    /// what exists.
    #[arg(long, env = "STITCH_MODE", default_value = "complete")]
    pub mode: String,
    /// Compute and print the index without writing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `afterpush stitch` and prints the outcome.
pub async fn run(args: StitchArgs) -> anyhow::Result<()> {
    let mode: StitchMode = args.mode.parse()?;
    let settings = StitchSettings::new(
        &args.arch_tag_template,
        &args.target_tag_template,
        &args.platforms,
        mode,
    )?;
    let reference: ImageRef = args
        .repo_ref
        .parse()
        .with_context(|| format!("repository reference {:?}", args.repo_ref))?;
    // Never created: a layout without the per-arch images is a mistake, not a target.
    let repo = open_repository(&reference, &OpenSettings::from_env()?).await?;
    let outcome = stitch::stitch(repo.as_ref(), &args.tag, &settings, args.dry_run)
        .await
        .with_context(|| format!("stitching {} in {}", args.tag, repo.location()))?;
    if matches!(outcome, StitchOutcome::Written { .. }) {
        repo.commit()
            .await
            .with_context(|| format!("committing {}", repo.location()))?;
    }
    let location = repo.location();
    match &outcome {
        StitchOutcome::Written { target, index } => {
            eprintln!(
                "wrote {location}:{target} = {} ({})",
                index.digest,
                index.platforms.join(", ")
            );
            println!("{}", index.json());
        }
        StitchOutcome::Unchanged { target, index } => {
            eprintln!(
                "{location}:{target} is already {} ({}); nothing written",
                index.digest,
                index.platforms.join(", ")
            );
            println!("{}", index.json());
        }
        StitchOutcome::WouldWrite { target, index } => {
            eprintln!(
                "dry run: would write {location}:{target} = {} ({})",
                index.digest,
                index.platforms.join(", ")
            );
            println!("{}", index.json());
        }
        StitchOutcome::Incomplete {
            target,
            present,
            missing,
        } => {
            anyhow::bail!(
                "not writing {location}:{target} in complete mode: missing {} (present: {})",
                missing.join(", "),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            );
        }
        StitchOutcome::Ignored { tag, reason } => {
            eprintln!("ignored {tag}: {reason}");
        }
    }
    Ok(())
}
