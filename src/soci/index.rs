//! The SOCI index manifest itself (`docs/soci-index.md` §2): an OCI image manifest whose
//! config media type carries the version and whose layers are the zTOCs.
//!
//! As in soci-snapshotter (`soci/soci_index.go`, `maybeAddDisableXattrAnnotation`),
//! `com.amazon.soci.disable-xattrs` is an annotation of each zTOC descriptor whose layer
//! has no xattrs and no opaque whiteout, added only with the xattr optimization; it is
//! not an annotation of the index.

use super::settings::IndexVersion;
use crate::oci::gojson::{to_go_json, GoDescriptor, GoManifest};
use crate::oci::{annotation, media, Sha256Digest};
use crate::registry::Manifest;
use std::collections::BTreeMap;

/// The config blob of every SOCI index: the two bytes `{}`.
pub const CONFIG_BLOB: &[u8] = b"{}";

/// One zTOC of an index, with the layer it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZtocEntry {
    /// The zTOC blob's digest.
    pub ztoc_digest: Sha256Digest,
    /// The zTOC blob's size in bytes.
    pub ztoc_size: u64,
    /// The digest of the layer it describes (`com.amazon.soci.image-layer-digest`).
    pub layer_digest: Sha256Digest,
    /// The layer's media type (`com.amazon.soci.image-layer-mediaType`).
    pub layer_media_type: String,
    /// The span size it was built with, in bytes (`com.amazon.soci.span-size`).
    pub span_size: u64,
    /// True to annotate the descriptor `com.amazon.soci.disable-xattrs` (xattr optimization on, and the layer has no xattrs).
    pub disable_xattrs: bool,
}

impl IndexVersion {
    /// The config media type (and artifact type) of this version.
    pub fn media_type(self) -> &'static str {
        match self {
            IndexVersion::V1 => media::SOCI_INDEX_V1,
            IndexVersion::V2 => media::SOCI_INDEX_V2,
        }
    }
}

/// Serialises a SOCI index exactly as soci-snapshotter's `MarshalIndex` does.
/// `subject` is the image manifest for v1 and `None` for v2.
pub fn soci_index_manifest(
    version: IndexVersion,
    entries: &[ZtocEntry],
    subject: Option<GoDescriptor>,
    build_tool: &str,
) -> Manifest {
    let layers = entries
        .iter()
        .map(|e| {
            let mut annotations = BTreeMap::from([
                (
                    annotation::SOCI_LAYER_DIGEST.to_string(),
                    e.layer_digest.to_string(),
                ),
                (
                    annotation::SOCI_LAYER_MEDIA_TYPE.to_string(),
                    e.layer_media_type.clone(),
                ),
                (
                    annotation::SOCI_SPAN_SIZE.to_string(),
                    e.span_size.to_string(),
                ),
            ]);
            if e.disable_xattrs {
                annotations.insert(
                    annotation::SOCI_DISABLE_XATTRS.to_string(),
                    "true".to_string(),
                );
            }
            GoDescriptor {
                media_type: media::SOCI_ZTOC.into(),
                digest: e.ztoc_digest.to_string(),
                size: e.ztoc_size,
                annotations,
                ..Default::default()
            }
        })
        .collect();
    let manifest = GoManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: None,
        config: GoDescriptor {
            media_type: version.media_type().into(),
            digest: Sha256Digest::of(CONFIG_BLOB).to_string(),
            size: CONFIG_BLOB.len() as u64,
            ..Default::default()
        },
        layers,
        subject,
        annotations: BTreeMap::from([(
            annotation::SOCI_BUILD_TOOL.to_string(),
            build_tool.to_string(),
        )]),
    };
    Manifest::new(media::OCI_MANIFEST, to_go_json(&manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_shape_byte_for_byte() {
        let entry = ZtocEntry {
            ztoc_digest: Sha256Digest::of(b"ztoc"),
            ztoc_size: 1234,
            layer_digest: Sha256Digest::of(b"layer"),
            layer_media_type: media::OCI_LAYER_GZIP.into(),
            span_size: 4194304,
            disable_xattrs: false,
        };
        let m = soci_index_manifest(
            IndexVersion::V2,
            std::slice::from_ref(&entry),
            None,
            "afterpush test",
        );
        let expected = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"#,
                r#""layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":1234,"#,
                r#""annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","com.amazon.soci.span-size":"4194304"}}}}],"#,
                r#""annotations":{{"com.amazon.soci.build-tool-identifier":"afterpush test"}}}}"#
            ),
            entry.ztoc_digest, entry.layer_digest
        );
        assert_eq!(std::str::from_utf8(&m.bytes).unwrap(), expected);
        assert_eq!(m.digest, Sha256Digest::of(expected.as_bytes()));

        let subject = GoDescriptor {
            media_type: media::DOCKER_MANIFEST.into(),
            digest: Sha256Digest::of(b"img").to_string(),
            size: 9,
            ..Default::default()
        };
        let v1 = soci_index_manifest(IndexVersion::V1, &[entry], Some(subject), "t");
        let text = std::str::from_utf8(&v1.bytes).unwrap();
        assert!(
            text.contains(r#""config":{"mediaType":"application/vnd.amazon.soci.index.v1+json""#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"],"subject":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json""#
            ),
            "{text}"
        );
    }
}
