//! Recognising SOCI output (ours or AWS's SOCI builder's), so that pushing it never
//! sets off more work: every push raises another ECR event.

use crate::oci::{annotation, ManifestSummary};

/// Our mark on a v2 output index: the digest of the image it was made from. It makes
/// a repeated event a no-op even when the output tag is the pushed tag itself.
pub const SOURCE_DIGEST_ANNOTATION: &str = "dev.afterpush.soci.source-digest";

/// True for the artifact (config) media types of SOCI indexes, v1 and v2.
pub fn is_soci_index_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.amazon.soci.index.")
}

/// Recognises afterpush's (or AWS's SOCI builder's) own output from the manifest bytes,
/// for what the event does not show (`SOCI_TAG_MODE=in-place` keeps the user's tag name):
/// a SOCI index manifest, an image manifest rewritten for SOCI v2 (annotated with its
/// index digest), or an image index holding SOCI index descriptors. Returns the reason.
pub fn is_our_soci_output(manifest: &ManifestSummary) -> Option<&'static str> {
    if manifest.artifact_type().is_some_and(is_soci_index_type) {
        return Some("the manifest is a SOCI index (SOCI config/artifact type)");
    }
    if manifest
        .annotations
        .contains_key(annotation::SOCI_INDEX_DIGEST)
    {
        return Some("the manifest is annotated com.amazon.soci.index-digest (SOCI v2 binding)");
    }
    if manifest.manifests.iter().any(|d| {
        d.artifact_type.as_deref().is_some_and(is_soci_index_type)
            || d.annotations
                .contains_key(annotation::SOCI_IMAGE_MANIFEST_DIGEST)
    }) {
        return Some("the index holds a SOCI index descriptor (SOCI v2 image index)");
    }
    if manifest
        .manifests
        .iter()
        .any(|d| d.annotations.contains_key(annotation::SOCI_INDEX_DIGEST))
    {
        return Some("the index holds manifests annotated com.amazon.soci.index-digest");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn manifest(json: &str) -> ManifestSummary {
        ManifestSummary::parse("test manifest", json.as_bytes()).unwrap()
    }

    #[test]
    fn recognises_soci_output_from_manifests() {
        let soci_index = manifest(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{DIGEST}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::SOCI_INDEX_V2
        ));
        assert!(is_our_soci_output(&soci_index)
            .unwrap()
            .contains("SOCI index"));
        let rewritten = manifest(&format!(
            r#"{{"mediaType":"{}","config":{{"mediaType":"{}","digest":"{DIGEST}","size":2}},"layers":[],"annotations":{{"com.amazon.soci.index-digest":"{DIGEST}"}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG
        ));
        assert!(is_our_soci_output(&rewritten)
            .unwrap()
            .contains("index-digest"));
        let v2_index = manifest(&format!(
            r#"{{"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{DIGEST}","size":9,"artifactType":"{}","annotations":{{"com.amazon.soci.image-manifest-digest":"{DIGEST}"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::SOCI_INDEX_V2
        ));
        assert!(is_our_soci_output(&v2_index)
            .unwrap()
            .contains("SOCI index descriptor"));
        let plain_index = manifest(&format!(
            r#"{{"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{DIGEST}","size":9,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        ));
        assert_eq!(is_our_soci_output(&plain_index), None);
        let image = manifest(&format!(
            r#"{{"mediaType":"{}","config":{{"mediaType":"{}","digest":"{DIGEST}","size":2}},"layers":[]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG
        ));
        assert_eq!(is_our_soci_output(&image), None);
    }
}
