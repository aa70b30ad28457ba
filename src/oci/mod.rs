//! OCI and Docker media types, digests, and the classification of a manifest.
//!
//! Manifests are always kept as the exact bytes a registry stored (their digest is the
//! sha256 of those bytes). They are read through [`ManifestSummary`] and
//! [`DescriptorSummary`], lenient serde views that keep only the fields afterpush
//! classifies by, or, where the SOCI indexer rewrites them, through the Go-ordered
//! structs of [`gojson`], which also write the SOCI output; a descriptor's `platform` is
//! read as [`gojson::GoPlatform`] in both.

pub mod gojson;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Media types afterpush reads or writes.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config (what makes a manifest an image).
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The OCI empty descriptor's media type (the `{}` blob).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Uncompressed OCI layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Gzip-compressed OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// Zstd-compressed OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker image manifest (v2 schema 2).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (the Docker form of an image index).
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Gzip-compressed Docker layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Uncompressed Docker layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// The config media type of a BuildKit registry cache manifest.
    pub const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
    /// SOCI index v1: the config media type of an index pushed as a referrer of the image manifest.
    pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
    /// SOCI index v2: the config (and artifact) type of an index bound to the image through a re-published image index.
    pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
    /// The media type of a zTOC blob in a SOCI index.
    pub const SOCI_ZTOC: &str = "application/octet-stream";
    /// In-toto attestation layers and artifacts.
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    /// The layer media type of cosign attestations (DSSE envelopes around in-toto).
    pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
    /// A cosign signature layer (simple signing).
    pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
    /// A cosign artifact signature.
    pub const COSIGN_ARTIFACT_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    /// Prefix of Notary (notation) signature artifact types.
    pub const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";

    /// Every manifest media type afterpush understands: the `Accept` list for registries
    /// and the `acceptedMediaTypes` for ECR's BatchGetImage (without them ECR may convert).
    pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

    /// True for an image index or a Docker manifest list.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// True for a single-image manifest (OCI or Docker v2 schema 2).
    pub fn is_image_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }
}

/// Annotations with a meaning to afterpush.
pub mod annotation {
    /// The tag of an entry in an OCI layout's `index.json` (or of an `oci-archive`).
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// Set on a re-published (v2) platform manifest: the digest of its SOCI index.
    pub const SOCI_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
    /// Set on a SOCI index's descriptor in the image index: the digest of the platform manifest it indexes.
    pub const SOCI_IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
    /// Set on a zTOC descriptor: the digest of the layer the zTOC describes.
    pub const SOCI_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
    /// Set on a zTOC descriptor: the media type of the layer the zTOC describes.
    pub const SOCI_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
    /// Set on a zTOC descriptor: the span size in bytes, as a decimal string.
    pub const SOCI_SPAN_SIZE: &str = "com.amazon.soci.span-size";
    /// The only annotation of a SOCI index: the tool that built it (`afterpush v<version>`).
    pub const SOCI_BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";
    /// Set to `"true"` on a zTOC descriptor whose layer has no xattrs (the xattr optimization).
    pub const SOCI_DISABLE_XATTRS: &str = "com.amazon.soci.disable-xattrs";
    /// BuildKit's annotation on an attestation entry of an image index; its value is [`ATTESTATION_MANIFEST`].
    pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
    /// BuildKit's annotation on an attestation entry: the digest of the image manifest it describes.
    pub const DOCKER_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
    /// The [`DOCKER_REFERENCE_TYPE`] value of an attestation manifest.
    pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
}

/// Errors about digests and manifest bytes.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A digest is not `sha256:` followed by 64 lowercase hex characters; holds the text given.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex>")]
    InvalidDigest(String),
    /// Bytes do not hash to the digest they were expected to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (a blob, a manifest, a config...).
        what: String,
        /// The digest the bytes should have.
        expected: Sha256Digest,
        /// The digest they have.
        actual: Sha256Digest,
    },
    /// Manifest bytes are not JSON of the expected shape.
    #[error("{what} is not valid manifest JSON: {source}")]
    InvalidManifest {
        /// Which manifest (tag or digest).
        what: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// A `sha256:<hex>` digest. The only algorithm registries (and ECR) use in practice;
/// anything else is rejected at parse time with a clear error.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
    /// The digest whose 32 raw bytes are `raw`.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        Self(raw)
    }
    /// The 32 raw bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The 64 hex characters, without `sha256:`.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Fails with [`OciError::DigestMismatch`] unless `bytes` hash to `self`.
    pub fn verify(&self, what: &str, bytes: &[u8]) -> Result<(), OciError> {
        let actual = Self::of(bytes);
        if &actual == self {
            Ok(())
        } else {
            Err(OciError::DigestMismatch {
                what: what.to_string(),
                expected: self.clone(),
                actual,
            })
        }
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha256Digest {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, OciError> {
        let bad = || OciError::InvalidDigest(s.to_string());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut raw).map_err(|_| bad())?;
        Ok(Self(raw))
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256, for verifying streamed blobs.
#[derive(Default, Clone)]
pub struct DigestWriter(Sha256);

impl DigestWriter {
    /// An empty hash, ready for [`update`](Self::update).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `bytes` to the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of every byte given so far.
    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

/// What kind of artifact a manifest is, as far as afterpush's jobs care.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// A runnable image manifest (OCI or Docker), inline cache included.
    Image,
    /// An image index / manifest list holding platform images.
    Index,
    /// A BuildKit registry cache (cacheconfig manifest, or a legacy cache index).
    BuildkitCache,
    /// A SOCI index (v1 or v2) manifest.
    SociIndex,
    /// An in-toto attestation / provenance / SBOM manifest.
    Attestation,
    /// A signature (cosign, notation).
    Signature,
    /// Anything else (Helm charts, unknown artifacts).
    Other,
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ArtifactKind::Image => "image",
            ArtifactKind::Index => "index",
            ArtifactKind::BuildkitCache => "buildkit-cache",
            ArtifactKind::SociIndex => "soci-index",
            ArtifactKind::Attestation => "attestation",
            ArtifactKind::Signature => "signature",
            ArtifactKind::Other => "other",
        };
        f.write_str(s)
    }
}

/// The fields of any manifest kind that classification and graph-walking need. Parsed
/// leniently (unknown fields ignored, missing fields empty) so that every manifest a
/// registry holds can be classified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    /// `mediaType`, when the manifest states it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// `artifactType` (OCI 1.1 artifacts).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// `config` of an image manifest (absent in an index).
    #[serde(default)]
    pub config: Option<DescriptorSummary>,
    /// `layers` of an image manifest.
    #[serde(default)]
    pub layers: Vec<DescriptorSummary>,
    /// `manifests` of an image index.
    #[serde(default)]
    pub manifests: Vec<DescriptorSummary>,
    /// `subject`: the manifest this one refers to (referrers: SOCI v1 indexes, signatures, attestations).
    #[serde(default)]
    pub subject: Option<DescriptorSummary>,
    /// `annotations` of the manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A descriptor as found inside any manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorSummary {
    /// `mediaType` of the content described.
    #[serde(default)]
    pub media_type: String,
    /// `digest` of the content described, as written (not yet checked as a [`Sha256Digest`]).
    pub digest: String,
    /// `size` of the content described, in bytes.
    #[serde(default)]
    pub size: u64,
    /// `artifactType` of the manifest described (OCI 1.1).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// `annotations` of the descriptor.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `platform` of an index entry.
    #[serde(default)]
    pub platform: Option<gojson::GoPlatform>,
}

impl ManifestSummary {
    /// Parses manifest bytes; `what` names the manifest in the error.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, OciError> {
        serde_json::from_slice(bytes).map_err(|source| OciError::InvalidManifest {
            what: what.to_string(),
            source,
        })
    }

    /// The media type of the manifest: its `mediaType` field, else the one given (from
    /// the registry's Content-Type), else guessed from its shape.
    pub fn effective_media_type<'a>(&'a self, stored: Option<&'a str>) -> &'a str {
        if let Some(mt) = self.media_type.as_deref() {
            return mt;
        }
        if let Some(mt) = stored {
            return mt;
        }
        if !self.manifests.is_empty() {
            media::OCI_INDEX
        } else {
            media::OCI_MANIFEST
        }
    }

    /// The artifact type in the OCI 1.1 sense: `artifactType`, else the config media type.
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or(self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Classifies the manifest (see [`ArtifactKind`]).
    pub fn kind(&self, stored_media_type: Option<&str>) -> ArtifactKind {
        let mt = self.effective_media_type(stored_media_type);
        let artifact = self.artifact_type().unwrap_or("");
        if artifact.starts_with("application/vnd.amazon.soci.index.") {
            return ArtifactKind::SociIndex;
        }
        if artifact == media::BUILDKIT_CACHE_CONFIG {
            return ArtifactKind::BuildkitCache;
        }
        if media::is_index(mt) {
            // Legacy BuildKit cache (image-manifest=false): an index of layer blobs plus one
            // cacheconfig descriptor.
            if self
                .manifests
                .iter()
                .any(|d| d.media_type == media::BUILDKIT_CACHE_CONFIG)
            {
                return ArtifactKind::BuildkitCache;
            }
            return ArtifactKind::Index;
        }
        if is_signature_type(artifact)
            || self.layers.iter().any(|l| is_signature_type(&l.media_type))
        {
            return ArtifactKind::Signature;
        }
        if artifact == media::IN_TOTO
            || artifact.contains("in-toto")
            || self
                .annotations
                .get(annotation::DOCKER_REFERENCE_TYPE)
                .map(String::as_str)
                == Some(annotation::ATTESTATION_MANIFEST)
            // cosign attestations (`.att` tags or OCI 1.1 referrers) have an image config
            // type but only DSSE envelope layers: attestations, not images.
            || (!self.layers.is_empty()
                && self
                    .layers
                    .iter()
                    .all(|l| l.media_type == media::IN_TOTO || l.media_type == media::DSSE_ENVELOPE))
        {
            return ArtifactKind::Attestation;
        }
        if media::is_image_manifest(mt)
            && (artifact == media::OCI_CONFIG || artifact == media::DOCKER_CONFIG)
        {
            return ArtifactKind::Image;
        }
        ArtifactKind::Other
    }
}

fn is_signature_type(mt: &str) -> bool {
    mt == media::COSIGN_SIGNATURE
        || mt == media::COSIGN_ARTIFACT_SIG
        || mt.starts_with(media::NOTARY_SIGNATURE)
}

/// True when an index entry is an attestation manifest (buildx puts them in the image
/// index with platform `unknown/unknown`).
pub fn is_attestation_descriptor(d: &DescriptorSummary) -> bool {
    d.annotations
        .get(annotation::DOCKER_REFERENCE_TYPE)
        .map(String::as_str)
        == Some(annotation::ATTESTATION_MANIFEST)
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_garbage() {
        let d = Sha256Digest::of(b"{}");
        assert_eq!(
            d.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(d.to_string().parse::<Sha256Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            "sha256:xyz",
        ] {
            assert!(bad.parse::<Sha256Digest>().is_err(), "{bad}");
        }
        assert!(d.verify("config", b"{}").is_ok());
        let err = d.verify("config", b"{ }").unwrap_err().to_string();
        assert!(
            err.contains("config") && err.contains(&d.to_string()),
            "{err}"
        );
    }

    #[test]
    fn classifies_manifest_kinds() {
        let cases = [
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[]}"#,
                ArtifactKind::Image,
            ),
            (
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:a","size":1},"layers":[]}"#,
                ArtifactKind::Image,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1}]}"#,
                ArtifactKind::Index,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:a","size":1},"layers":[]}"#,
                ArtifactKind::BuildkitCache,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:a","size":1},{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:b","size":1}]}"#,
                ArtifactKind::BuildkitCache,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"sha256:a","size":2},"layers":[]}"#,
                ArtifactKind::SociIndex,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[{"mediaType":"application/vnd.in-toto+json","digest":"sha256:b","size":1}]}"#,
                ArtifactKind::Attestation,
            ),
            // cosign `.att`: an image config, DSSE layers only.
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:b","size":1},{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:c","size":1}]}"#,
                ArtifactKind::Attestation,
            ),
            // A DSSE layer beside a real layer is still an image.
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:b","size":1},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:c","size":1}]}"#,
                ArtifactKind::Image,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:b","size":1}]}"#,
                ArtifactKind::Signature,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:a","size":1},"layers":[]}"#,
                ArtifactKind::Other,
            ),
        ];
        for (json, kind) in cases {
            assert_eq!(
                ManifestSummary::parse("m", json.as_bytes())
                    .unwrap()
                    .kind(None),
                kind,
                "{json}"
            );
        }
    }
}
