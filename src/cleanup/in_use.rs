//! "In use means kept": the images that ECS and Lambda run or may roll back to, collected
//! before any deletion, and never deleted whatever the rules say.
//!
//! A collector ([`InUseSource`]) lists references (`<account>.dkr.ecr.<region>.amazonaws.com/repo:tag|@digest`)
//! with who holds each ([`InUseRef`]); only references to the collecting account's own
//! registry in its region are kept. When a repository is planned, [`InUse::protected`]
//! resolves each reference against the repository's listing: a digest is that digest, a
//! tag is the digest the tag names now. Listing errors are fatal to the whole run
//! (see `cleanup::sweep`): an image in use that could not be seen must not be deleted.

pub use crate::catalog::account_workloads::Workloads;
pub use crate::catalog::workloads::{
    arn_account_region, own_registry_ref, EcrImageRef, InUseError, InUseRef, InUseSource,
    NoWorkloads, Protect, Target, DEFAULT_TASK_DEFINITION_REVISIONS,
};
use crate::catalog::ImageRecord;
use crate::oci::Sha256Digest;
use serde::Serialize;
use std::collections::BTreeMap;

/// The references of one run, with what the collection saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InUse {
    /// Every reference found, to this account's registry in this region.
    pub refs: Vec<InUseRef>,
}

impl InUse {
    /// The images of `repository` that are in use, each with who uses it: digests as
    /// they are, tags resolved to what they name in `images` now. A tag no image
    /// carries (deleted since) protects nothing: there is nothing left to pull by it.
    pub fn protected(
        &self,
        repository: &str,
        images: &[ImageRecord],
    ) -> BTreeMap<Sha256Digest, Vec<String>> {
        let mut by_tag: BTreeMap<&str, &Sha256Digest> = BTreeMap::new();
        for im in images {
            for t in &im.tags {
                by_tag.insert(t, &im.digest);
            }
        }
        let mut out: BTreeMap<Sha256Digest, Vec<String>> = BTreeMap::new();
        for r in self
            .refs
            .iter()
            .filter(|r| r.image.repository == repository)
        {
            let digest = match &r.image.target {
                Target::Digest(d) => d.clone(),
                Target::Tag(t) => match by_tag.get(t.as_str()) {
                    Some(d) => (*d).clone(),
                    None => continue,
                },
            };
            let users = out.entry(digest).or_default();
            if !users.contains(&r.user) {
                users.push(r.user.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn image(name: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord::named(name, tags, Utc::now())
    }

    #[test]
    fn tags_resolve_to_what_they_name_now_digests_stay() {
        let images = [image("new", &["v1"]), image("old", &[])];
        let old = Sha256Digest::of(b"old");
        let reference = |uri: &str, user: &str| InUseRef {
            image: EcrImageRef::parse(uri).unwrap(),
            user: user.into(),
        };
        let in_use = InUse {
            refs: vec![
                reference(
                    &format!("{HOST}/app:v1"),
                    "ecs service c/web, task def web:1",
                ),
                reference(
                    &format!("{HOST}/app@{old}"),
                    "ecs task c/t1 (container web)",
                ),
                reference(&format!("{HOST}/app:gone"), "lambda fn f"),
                reference(&format!("{HOST}/other:v1"), "lambda fn g"),
            ],
        };
        let p = in_use.protected("app", &images);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[&Sha256Digest::of(b"new")],
            ["ecs service c/web, task def web:1"]
        );
        assert_eq!(p[&old], ["ecs task c/t1 (container web)"]);
    }
}
