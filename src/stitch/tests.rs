//! Decision-logic tests over an in-memory [`Repository`].
//!
//! The in-memory repository is a stand-in for pure logic only (which tags count, what
//! gets written, when nothing is written): the same scenarios run against the real
//! docker-registry in `tests/it/stitch_registry.rs`. It also injects what no local
//! registry does on demand: an immutable-tag refusal shaped like ECR's.

use super::*;
use crate::oci::{media, DescriptorSummary, ManifestSummary};
use crate::registry::{BlobRef, BlobStream};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct MemRepo {
    state: Mutex<MemState>,
    /// Tags that may be written once only (an ECR IMMUTABLE repository).
    immutable: bool,
}

#[derive(Debug, Default)]
struct MemState {
    manifests: HashMap<Sha256Digest, Manifest>,
    tags: BTreeMap<String, Sha256Digest>,
    blobs: HashMap<Sha256Digest, Bytes>,
    puts: Vec<(String, Sha256Digest)>,
}

fn not_found(what: &str) -> RegistryError {
    RegistryError::NotFound {
        what: what.to_string(),
        location: "mem".to_string(),
    }
}

impl MemRepo {
    fn lookup(&self, reference: &str) -> crate::registry::Result<Manifest> {
        let s = self.state.lock().unwrap();
        let digest = match reference.parse::<Sha256Digest>() {
            Ok(d) => d,
            Err(_) => s
                .tags
                .get(reference)
                .cloned()
                .ok_or_else(|| not_found(reference))?,
        };
        s.manifests
            .get(&digest)
            .cloned()
            .ok_or_else(|| not_found(reference))
    }
    fn puts(&self) -> Vec<(String, Sha256Digest)> {
        self.state.lock().unwrap().puts.clone()
    }
    fn add_blob(&self, bytes: &[u8]) -> Sha256Digest {
        let d = Sha256Digest::of(bytes);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(d.clone(), Bytes::copy_from_slice(bytes));
        d
    }
    fn add_manifest(&self, m: &Manifest, tag: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.manifests.insert(m.digest.clone(), m.clone());
        if let Some(t) = tag {
            s.tags.insert(t.to_string(), m.digest.clone());
        }
    }
}

#[async_trait]
impl Repository for MemRepo {
    fn location(&self) -> String {
        "mem/app".to_string()
    }
    async fn resolve(&self, reference: &str) -> crate::registry::Result<BlobRef> {
        Ok(self.lookup(reference)?.descriptor())
    }
    async fn get_manifest(&self, reference: &str) -> crate::registry::Result<Manifest> {
        self.lookup(reference)
    }
    async fn put_manifest(
        &self,
        manifest: &Manifest,
        tag: Option<&str>,
    ) -> crate::registry::Result<()> {
        let mut s = self.state.lock().unwrap();
        // Like a real registry: every child must exist first.
        let summary = ManifestSummary::parse("put", &manifest.bytes)?;
        for d in &summary.manifests {
            let digest: Sha256Digest = d.digest.parse()?;
            if !s.manifests.contains_key(&digest) {
                return Err(RegistryError::Http {
                    url: "mem".into(),
                    status: 400,
                    code: Some("MANIFEST_BLOB_UNKNOWN".into()),
                    message: d.digest.clone(),
                });
            }
        }
        if let Some(t) = tag {
            if self.immutable && s.tags.get(t).is_some_and(|d| d != &manifest.digest) {
                return Err(RegistryError::Http {
                    url: format!("mem/v2/app/manifests/{t}"),
                    status: 400,
                    code: Some("TAG_INVALID".into()),
                    message: format!("The image tag '{t}' already exists in the 'app' repository and cannot be overwritten because the repository is immutable."),
                });
            }
            s.tags.insert(t.to_string(), manifest.digest.clone());
            s.puts.push((t.to_string(), manifest.digest.clone()));
        }
        s.manifests
            .insert(manifest.digest.clone(), manifest.clone());
        Ok(())
    }
    async fn delete_manifest(&self, digest: &Sha256Digest) -> crate::registry::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.manifests.remove(digest);
        s.tags.retain(|_, d| d != digest);
        Ok(())
    }
    async fn blob_size(&self, digest: &Sha256Digest) -> crate::registry::Result<Option<u64>> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .blobs
            .get(digest)
            .map(|b| b.len() as u64))
    }
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        _range: Option<Range<u64>>,
    ) -> crate::registry::Result<BlobStream> {
        let b = self
            .state
            .lock()
            .unwrap()
            .blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| not_found(&digest.to_string()))?;
        Ok(Box::pin(futures::stream::once(async move { Ok(b) })))
    }
    async fn push_blob(
        &self,
        _d: &Sha256Digest,
        _s: u64,
        _data: BlobStream,
    ) -> crate::registry::Result<()> {
        Err(RegistryError::Unsupported(
            "push_blob".into(),
            "MemRepo".into(),
        ))
    }
    async fn list_tags(&self) -> crate::registry::Result<Vec<String>> {
        Ok(self.state.lock().unwrap().tags.keys().cloned().collect())
    }
    async fn referrers(
        &self,
        _d: &Sha256Digest,
        _a: Option<&str>,
    ) -> crate::registry::Result<Vec<DescriptorSummary>> {
        Ok(vec![])
    }
}

/// Adds an image for `platform` ("os/arch[/variant]") under `tag`; returns its manifest.
fn add_image(repo: &MemRepo, tag: Option<&str>, mt: &str, config_json: &str) -> Manifest {
    let config = repo.add_blob(config_json.as_bytes());
    let config_mt = if mt == media::DOCKER_MANIFEST {
        media::DOCKER_CONFIG
    } else {
        media::OCI_CONFIG
    };
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"{config_mt}","digest":"{config}","size":{}}},"layers":[]}}"#,
        config_json.len()
    );
    let m = Manifest::new(mt, json.into_bytes());
    repo.add_manifest(&m, tag);
    m
}

fn config(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!(r#"{{"architecture":"{arch}","os":"{os}","variant":"{v}"}}"#),
        None => format!(r#"{{"architecture":"{arch}","os":"{os}"}}"#),
    }
}

fn platforms_of(outcome: &StitchOutcome) -> Vec<String> {
    outcome
        .index()
        .map(|i| i.platforms.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn complete_mode_waits_for_every_required_platform() {
    let repo = MemRepo::default();
    let settings = StitchSettings::default();
    add_image(
        &repo,
        Some("1.0-amd64"),
        media::DOCKER_MANIFEST,
        &config("linux", "amd64", None),
    );
    let out = handle_push(&repo, "1.0-amd64", &settings).await.unwrap();
    match &out {
        StitchOutcome::Incomplete { missing, .. } => {
            assert_eq!(missing, &["linux/arm64 (tag 1.0-arm64)"])
        }
        other => panic!("{other:?}"),
    }
    assert!(repo.puts().is_empty(), "nothing written while incomplete");

    add_image(
        &repo,
        Some("1.0-arm64"),
        media::DOCKER_MANIFEST,
        &config("linux", "arm64", Some("v8")),
    );
    let out = handle_push(&repo, "1.0-arm64", &settings).await.unwrap();
    assert!(matches!(out, StitchOutcome::Written { .. }), "{out:?}");
    assert_eq!(platforms_of(&out), ["linux/amd64", "linux/arm64"]);
    assert_eq!(out.index().unwrap().media_type, media::DOCKER_LIST);
    assert_eq!(repo.puts().len(), 1);

    // The same event again (at-least-once delivery): nothing rewritten.
    let again = handle_push(&repo, "1.0-amd64", &settings).await.unwrap();
    assert!(
        matches!(again, StitchOutcome::Unchanged { .. }),
        "{again:?}"
    );
    assert_eq!(repo.puts().len(), 1);
}

#[tokio::test]
async fn partial_mode_writes_what_exists_and_grows() {
    let repo = MemRepo::default();
    let settings =
        StitchSettings::from_lookup(|k| (k == "STITCH_MODE").then(|| "partial".to_string()))
            .unwrap();
    add_image(
        &repo,
        Some("2-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "arm64", None),
    );
    let out = handle_push(&repo, "2-arm64", &settings).await.unwrap();
    assert_eq!(platforms_of(&out), ["linux/arm64"]);
    add_image(
        &repo,
        Some("2-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    add_image(
        &repo,
        Some("2-s390x"),
        media::OCI_MANIFEST,
        &config("linux", "s390x", None),
    );
    let out = handle_push(&repo, "2-s390x", &settings).await.unwrap();
    assert_eq!(
        platforms_of(&out),
        ["linux/amd64", "linux/arm64", "linux/s390x"]
    );
    assert_eq!(out.index().unwrap().media_type, media::OCI_INDEX);
}

#[tokio::test]
async fn tags_not_matching_the_template_and_the_target_itself_are_ignored() {
    let repo = MemRepo::default();
    let settings = StitchSettings::default();
    for tag in ["1.0", "latest", "1.0-rc1", "cache-main"] {
        let out = handle_push(&repo, tag, &settings).await.unwrap();
        assert!(
            matches!(out, StitchOutcome::Ignored { .. }),
            "{tag}: {out:?}"
        );
    }
    // A target template that a per-arch name could produce: the loop guard holds.
    let weird = StitchSettings::new(
        "{tag}-{arch}",
        "{tag}-amd64",
        "linux/amd64",
        StitchMode::Complete,
    )
    .unwrap();
    let out = handle_push(&repo, "1.0-amd64", &weird).await.unwrap();
    assert!(matches!(out, StitchOutcome::Ignored { .. }), "{out:?}");
}

#[tokio::test]
async fn a_tag_whose_config_disagrees_is_an_error_naming_both() {
    let repo = MemRepo::default();
    add_image(
        &repo,
        Some("3-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    add_image(
        &repo,
        Some("3-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    let err = handle_push(&repo, "3-amd64", &StitchSettings::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StitchError::PlatformMismatch { .. }), "{msg}");
    assert!(
        msg.contains("3-arm64") && msg.contains("arm64") && msg.contains("linux/amd64"),
        "{msg}"
    );
    assert!(!err.is_retryable());
    assert!(repo.puts().is_empty());
}

#[tokio::test]
async fn immutable_target_is_a_clear_permanent_error() {
    let repo = MemRepo {
        immutable: true,
        ..Default::default()
    };
    let settings =
        StitchSettings::from_lookup(|k| (k == "STITCH_MODE").then(|| "partial".to_string()))
            .unwrap();
    add_image(
        &repo,
        Some("4-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    handle_push(&repo, "4-amd64", &settings).await.unwrap();
    // Same content again: fine (nothing to write).
    assert!(matches!(
        handle_push(&repo, "4-amd64", &settings).await.unwrap(),
        StitchOutcome::Unchanged { .. }
    ));
    add_image(
        &repo,
        Some("4-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "arm64", None),
    );
    let err = handle_push(&repo, "4-arm64", &settings).await.unwrap_err();
    assert!(matches!(err, StitchError::ImmutableTag { .. }), "{err}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("target tag 4") && msg.contains("immutable"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_foreign_single_image_under_the_target_tag_is_not_replaced() {
    let repo = MemRepo::default();
    add_image(
        &repo,
        Some("5"),
        media::OCI_MANIFEST,
        &config("linux", "riscv64", None),
    );
    add_image(
        &repo,
        Some("5-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    add_image(
        &repo,
        Some("5-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "arm64", None),
    );
    let err = handle_push(&repo, "5-amd64", &StitchSettings::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StitchError::TargetIsForeignImage { .. }),
        "{err}"
    );
    assert!(repo.puts().is_empty());
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let repo = MemRepo::default();
    add_image(
        &repo,
        Some("6-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    add_image(
        &repo,
        Some("6-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "arm64", None),
    );
    let out = stitch(&repo, "6", &StitchSettings::default(), true)
        .await
        .unwrap();
    assert!(matches!(out, StitchOutcome::WouldWrite { .. }), "{out:?}");
    assert!(repo.puts().is_empty());
    assert!(repo.resolve("6").await.is_err());
}

#[tokio::test]
async fn a_stale_writer_is_corrected_by_its_own_verification_round() {
    // Simulates the race: another writer put an index with only amd64 after we read.
    // Our call must end with the full index in place.
    let repo = MemRepo::default();
    let settings =
        StitchSettings::from_lookup(|k| (k == "STITCH_MODE").then(|| "partial".to_string()))
            .unwrap();
    add_image(
        &repo,
        Some("7-amd64"),
        media::OCI_MANIFEST,
        &config("linux", "amd64", None),
    );
    let partial = stitch(&repo, "7", &settings, false).await.unwrap();
    let partial_digest = partial.index().unwrap().digest.clone();
    add_image(
        &repo,
        Some("7-arm64"),
        media::OCI_MANIFEST,
        &config("linux", "arm64", None),
    );
    let full = stitch(&repo, "7", &settings, false).await.unwrap();
    assert_ne!(full.index().unwrap().digest, partial_digest);
    // A stale writer now overwrites the target with the partial index...
    repo.put_manifest(&partial.index().unwrap().manifest, Some("7"))
        .await
        .unwrap();
    // ...and the next event (or retry) restores the full one.
    let fixed = handle_push(&repo, "7-amd64", &settings).await.unwrap();
    assert_eq!(fixed.index().unwrap().digest, full.index().unwrap().digest);
    assert_eq!(
        repo.resolve("7").await.unwrap().digest,
        full.index().unwrap().digest
    );
}

#[test]
fn settings_from_lookup_validate_and_name_the_variable() {
    let s = StitchSettings::default();
    assert_eq!(s.arch_tag_template.as_str(), "{tag}-{arch}");
    assert_eq!(s.target_tag_template.as_str(), "{tag}");
    assert_eq!(s.mode, StitchMode::Complete);
    assert_eq!(
        s.required_platforms
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );

    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let s = StitchSettings::from_lookup(env(&[(
        "REQUIRED_PLATFORMS",
        "linux/arm/v7, linux/arm64/v8",
    )]))
    .unwrap();
    assert_eq!(
        s.required_platforms
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["linux/arm/v7", "linux/arm64"]
    );

    for (pairs, needle) in [
        (&[("STITCH_MODE", "sometimes")][..], "STITCH_MODE"),
        (&[("ARCH_TAG_TEMPLATE", "{tag}")][..], "ARCH_TAG_TEMPLATE"),
        (
            &[("TARGET_TAG_TEMPLATE", "{tag}-{arch}")][..],
            "TARGET_TAG_TEMPLATE",
        ),
        (&[("REQUIRED_PLATFORMS", "linux")][..], "linux"),
    ] {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let err = StitchSettings::from_lookup(|k| {
            owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn immutable_refusals_are_recognised() {
    let ecr = RegistryError::Http {
        url: "https://1.dkr.ecr.us-east-1.amazonaws.com/v2/app/manifests/1.0".into(),
        status: 400,
        code: Some("TAG_INVALID".into()),
        message: "The image tag '1.0' already exists in the 'app' repository and cannot be overwritten because the repository is immutable.".into(),
    };
    assert!(immutable_refusal(&ecr).is_some());
    let other = RegistryError::Http {
        url: "u".into(),
        status: 400,
        code: Some("TAG_INVALID".into()),
        message: "manifest tag did not match URI".into(),
    };
    assert!(immutable_refusal(&other).is_none());
}
