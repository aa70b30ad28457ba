//! Building the stitched index: media-type choice, descriptor order and the exact bytes.
//!
//! The bytes are written with our own serde structs rather than `oci_spec::ImageIndex`
//! because oci-spec keeps annotations in a `HashMap`, whose iteration order differs from
//! one process to the next: two Lambda invocations would then write different digests
//! for the same index, and neither idempotency nor convergence would hold.

use super::platform::PlatformSpec;
use super::StitchError;
use crate::oci::media;
use crate::oci::Sha256Digest;
use crate::registry::Manifest;
use serde::Serialize;
use std::collections::BTreeMap;

/// A platform image to list in the index: where it came from and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformChild {
    /// The per-arch tag it was found under (for messages).
    pub tag: String,
    /// The image manifest's media type (OCI or Docker).
    pub media_type: String,
    /// The image manifest's digest.
    pub digest: Sha256Digest,
    /// The image manifest's size in bytes.
    pub size: u64,
    /// The platform its config declares.
    pub platform: PlatformSpec,
    /// Descriptor annotations carried over from a per-arch index (OCI output only).
    pub annotations: BTreeMap<String, String>,
}

/// A manifest attached to a platform image, kept from a per-arch index with its
/// descriptor as found: a buildx attestation (`vnd.docker.reference.digest`) or a SOCI
/// v2 index (`com.amazon.soci.image-manifest-digest`, when the SOCI indexer rewrote the
/// per-arch tag in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationChild {
    /// The per-arch tag it was found under (for messages).
    pub tag: String,
    /// Its manifest's media type.
    pub media_type: String,
    /// Its manifest's digest.
    pub digest: Sha256Digest,
    /// Its manifest's size in bytes.
    pub size: u64,
    /// Its `artifactType`, as the source index gave it.
    pub artifact_type: Option<String>,
    /// The platform the source index gave it, unchanged (buildx attestations:
    /// `unknown/unknown`; SOCI indexes: their image's platform).
    pub platform: Option<PlatformSpec>,
    /// Includes the annotation naming the platform image it is attached to.
    pub annotations: BTreeMap<String, String>,
    /// The platform image it attests.
    pub attests: Sha256Digest,
}

/// The index media type: a Docker manifest list only when every child is a Docker v2
/// manifest (what Docker-only toolchains expect); an OCI index for anything else, mixed
/// children included, because a Docker list must not name OCI manifests.
pub fn choose_media_type<'a>(child_media_types: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut any = false;
    for mt in child_media_types {
        any = true;
        if mt != media::DOCKER_MANIFEST {
            return media::OCI_INDEX;
        }
    }
    if any {
        media::DOCKER_LIST
    } else {
        media::OCI_INDEX
    }
}

/// Puts platform children in output order: the order of `required` first (several
/// children for one entry, e.g. Windows builds, by their full platform), then extras
/// sorted by platform. Fails when two children have the same platform.
pub fn order_children(
    required: &[PlatformSpec],
    mut children: Vec<PlatformChild>,
) -> Result<Vec<PlatformChild>, StitchError> {
    let rank = |p: &PlatformSpec| {
        required
            .iter()
            .position(|r| p.satisfies(r))
            .unwrap_or(required.len())
    };
    children.sort_by(|a, b| {
        (rank(&a.platform), &a.platform, &a.digest).cmp(&(
            rank(&b.platform),
            &b.platform,
            &b.digest,
        ))
    });
    for pair in children.windows(2) {
        if pair[0].platform == pair[1].platform {
            return Err(StitchError::DuplicatePlatform {
                platform: pair[0].platform.to_string(),
                first: format!("{} ({})", pair[0].tag, pair[0].digest),
                second: format!("{} ({})", pair[1].tag, pair[1].digest),
            });
        }
    }
    Ok(children)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<DescriptorJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct PlatformJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<&'a str>,
    #[serde(rename = "os.features", skip_serializing_if = "<[_]>::is_empty")]
    os_features: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

/// The index over `children` (already ordered by [`order_children`]) and attestations,
/// as compact JSON: the same inputs always give the same bytes and digest.
///
/// Attestations come last, in the order of the images they attest, then by digest.
/// Attestations whose image is not among `children` are left out (they would attest
/// nothing in this index).
pub fn build_index(children: &[PlatformChild], attestations: &[AttestationChild]) -> Manifest {
    let position = |d: &Sha256Digest| children.iter().position(|c| &c.digest == d);
    let mut attestations: Vec<&AttestationChild> = attestations
        .iter()
        .filter(|a| position(&a.attests).is_some())
        .collect();
    attestations
        .sort_by(|a, b| (position(&a.attests), &a.digest).cmp(&(position(&b.attests), &b.digest)));
    attestations.dedup_by(|a, b| a.digest == b.digest);

    let media_type = choose_media_type(
        children
            .iter()
            .map(|c| c.media_type.as_str())
            .chain(attestations.iter().map(|a| a.media_type.as_str())),
    );
    let docker = media_type == media::DOCKER_LIST;
    let mut manifests: Vec<DescriptorJson<'_>> = children
        .iter()
        .map(|c| DescriptorJson {
            media_type: &c.media_type,
            digest: c.digest.to_string(),
            size: c.size,
            artifact_type: None,
            platform: Some(PlatformJson {
                architecture: &c.platform.architecture,
                os: &c.platform.os,
                os_version: c.platform.os_version.as_deref(),
                os_features: &c.platform.os_features,
                variant: c.platform.variant.as_deref(),
            }),
            // Docker manifest list entries have no annotations field.
            annotations: if docker {
                BTreeMap::new()
            } else {
                c.annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            },
        })
        .collect();
    manifests.extend(attestations.iter().map(|a| {
        DescriptorJson {
            media_type: &a.media_type,
            digest: a.digest.to_string(),
            size: a.size,
            artifact_type: a.artifact_type.as_deref(),
            platform: a.platform.as_ref().map(|p| PlatformJson {
                architecture: &p.architecture,
                os: &p.os,
                os_version: p.os_version.as_deref(),
                os_features: &p.os_features,
                variant: p.variant.as_deref(),
            }),
            annotations: a
                .annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }));
    let json = serde_json::to_vec(&IndexJson {
        schema_version: 2,
        media_type,
        manifests,
    })
    .expect("an index of strings and numbers always serialises");
    Manifest::new(media_type, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::annotation;
    use proptest::prelude::*;

    fn child(tag: &str, mt: &str, platform: &str, n: u8) -> PlatformChild {
        PlatformChild {
            tag: tag.to_string(),
            media_type: mt.to_string(),
            digest: Sha256Digest::of(&[n]),
            size: 100 + n as u64,
            platform: PlatformSpec::parse(platform).unwrap(),
            annotations: BTreeMap::new(),
        }
    }

    fn attestation(attests: &PlatformChild, n: u8) -> AttestationChild {
        AttestationChild {
            tag: attests.tag.clone(),
            media_type: media::OCI_MANIFEST.to_string(),
            digest: Sha256Digest::of(&[200, n]),
            size: 500,
            artifact_type: None,
            platform: Some(PlatformSpec {
                os: "unknown".to_string(),
                architecture: "unknown".to_string(),
                variant: None,
                os_version: None,
                os_features: vec![],
            }),
            annotations: BTreeMap::from([
                (
                    annotation::DOCKER_REFERENCE_DIGEST.to_string(),
                    attests.digest.to_string(),
                ),
                (
                    annotation::DOCKER_REFERENCE_TYPE.to_string(),
                    annotation::ATTESTATION_MANIFEST.to_string(),
                ),
            ]),
            attests: attests.digest.clone(),
        }
    }

    fn required() -> Vec<PlatformSpec> {
        super::super::platform::parse_platform_list("linux/amd64,linux/arm64").unwrap()
    }

    #[test]
    fn media_type_choice() {
        use media::*;
        assert_eq!(
            choose_media_type([DOCKER_MANIFEST, DOCKER_MANIFEST]),
            DOCKER_LIST
        );
        assert_eq!(choose_media_type([OCI_MANIFEST, OCI_MANIFEST]), OCI_INDEX);
        assert_eq!(
            choose_media_type([DOCKER_MANIFEST, OCI_MANIFEST]),
            OCI_INDEX
        );
        assert_eq!(
            choose_media_type([OCI_MANIFEST, DOCKER_MANIFEST]),
            OCI_INDEX
        );
        assert_eq!(choose_media_type([]), OCI_INDEX);
    }

    #[test]
    fn exact_bytes_of_a_docker_list_and_an_oci_index() {
        let amd = child("1-amd64", media::DOCKER_MANIFEST, "linux/amd64", 1);
        let arm = child("1-arm64", media::DOCKER_MANIFEST, "linux/arm64", 2);
        let m = build_index(
            &order_children(&required(), vec![arm.clone(), amd.clone()]).unwrap(),
            &[],
        );
        assert_eq!(m.media_type, media::DOCKER_LIST);
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":101,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{}","digest":"{}","size":102,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            media::DOCKER_LIST,
            media::DOCKER_MANIFEST,
            amd.digest,
            media::DOCKER_MANIFEST,
            arm.digest
        );
        assert_eq!(std::str::from_utf8(&m.bytes).unwrap(), want);
        assert_eq!(m.digest, Sha256Digest::of(want.as_bytes()));

        let mut win = child("1-windows-amd64", media::OCI_MANIFEST, "windows/amd64", 3);
        win.platform.os_version = Some("10.0.20348.2227".to_string());
        win.platform.os_features = vec!["win32k".to_string()];
        let v7 = child("1-arm", media::OCI_MANIFEST, "linux/arm", 4);
        let att = attestation(&amd, 1);
        let m = build_index(
            &order_children(&required(), vec![win.clone(), v7.clone(), amd.clone()]).unwrap(),
            std::slice::from_ref(&att),
        );
        assert_eq!(
            m.media_type,
            media::OCI_INDEX,
            "mixed children give an OCI index"
        );
        let json: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        let platforms: Vec<String> = json["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}/{}/{}/{}",
                    d["platform"]["os"].as_str().unwrap(),
                    d["platform"]["architecture"].as_str().unwrap(),
                    d["platform"]["variant"].as_str().unwrap_or("-"),
                    d["platform"]["os.version"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            platforms,
            [
                "linux/amd64/-/-",
                "linux/arm/v7/-",
                "windows/amd64/-/10.0.20348.2227",
                "unknown/unknown/-/-"
            ]
        );
        assert_eq!(json["manifests"][2]["platform"]["os.features"][0], "win32k");
        assert_eq!(
            json["manifests"][3]["annotations"][annotation::DOCKER_REFERENCE_DIGEST],
            amd.digest.to_string()
        );
        assert!(
            !std::str::from_utf8(&m.bytes).unwrap().contains(' '),
            "compact JSON"
        );
    }

    #[test]
    fn attestations_for_images_not_in_the_index_are_dropped() {
        let amd = child("1-amd64", media::OCI_MANIFEST, "linux/amd64", 1);
        let other = child("1-arm64", media::OCI_MANIFEST, "linux/arm64", 2);
        let m = build_index(std::slice::from_ref(&amd), &[attestation(&other, 1)]);
        let json: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(json["manifests"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn duplicate_platforms_are_an_error_naming_both_tags() {
        let a = child("1-arm", media::OCI_MANIFEST, "linux/arm", 1);
        let b = child("1-armv7", media::OCI_MANIFEST, "linux/arm/v7", 2);
        let err = order_children(&required(), vec![a, b])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/arm/v7") && err.contains("1-arm ") && err.contains("1-armv7"),
            "{err}"
        );
    }

    proptest! {
        /// Any arrival order of the same children and attestations gives the same bytes,
        /// required platforms come first in their configured order, extras sorted,
        /// attestations last.
        #[test]
        fn order_and_bytes_do_not_depend_on_input_order(
            picks in prop::sample::subsequence(vec![
                "linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386",
                "linux/s390x", "windows/amd64", "linux/ppc64le",
            ], 1..8),
            required_picks in prop::sample::subsequence(vec![
                "linux/arm64", "linux/amd64", "linux/arm/v7", "linux/s390x",
            ], 0..4),
            docker in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let required: Vec<PlatformSpec> = required_picks.iter().map(|p| PlatformSpec::parse(p).unwrap()).collect();
            let mt = if docker { media::DOCKER_MANIFEST } else { media::OCI_MANIFEST };
            let children: Vec<PlatformChild> = picks.iter().enumerate()
                .map(|(i, p)| child(&format!("t-{i}"), mt, p, i as u8)).collect();
            let atts: Vec<AttestationChild> = children.iter().enumerate().filter(|(i, _)| i % 2 == 0)
                .map(|(i, c)| attestation(c, i as u8)).collect();
            let first = build_index(&order_children(&required, children.clone()).unwrap(), &atts);

            let mut shuffled = children.clone();
            let mut shuffled_atts = atts.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); shuffled.swap(i, (s >> 33) as usize % (i + 1)); }
            shuffled_atts.reverse();
            let second = build_index(&order_children(&required, shuffled).unwrap(), &shuffled_atts);
            prop_assert_eq!(&first.bytes, &second.bytes);

            let json: serde_json::Value = serde_json::from_slice(&first.bytes).unwrap();
            let entries = json["manifests"].as_array().unwrap();
            prop_assert_eq!(entries.len(), children.len() + atts.len());
            let platforms: Vec<PlatformSpec> = entries[..children.len()].iter().map(|d| PlatformSpec::new(
                d["platform"]["os"].as_str().unwrap(), d["platform"]["architecture"].as_str().unwrap(), d["platform"]["variant"].as_str())).collect();
            // Required ones first, in the configured order.
            let expected_required: Vec<&PlatformSpec> = required.iter().filter(|r| platforms.contains(r)).collect();
            let got_required: Vec<&PlatformSpec> = platforms.iter().take(expected_required.len()).collect();
            prop_assert_eq!(got_required, expected_required.clone());
            // Extras after them, sorted.
            let extras = &platforms[expected_required.len()..];
            prop_assert!(extras.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(extras.iter().all(|e| !required.contains(e)));
            // Attestations last.
            prop_assert!(entries[children.len()..].iter().all(|d| d["platform"]["os"] == "unknown"));
            // Docker list only when every child is Docker and there are no OCI attestations.
            let want_mt = if docker && atts.is_empty() { media::DOCKER_LIST } else { media::OCI_INDEX };
            prop_assert_eq!(first.media_type.as_str(), want_mt);
        }
    }
}
