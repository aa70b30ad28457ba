//! Which layers get a zTOC (`docs/soci-index.md` §1).

use crate::oci::media;
use crate::ztoc::LayerCompression;

/// What to do with one layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerDecision {
    /// Build a zTOC for the layer, which has this compression.
    Index(LayerCompression),
    /// No zTOC, with the reason.
    Skip(String),
}

/// gzip and plain tar layers of at least `min_size` bytes get a zTOC; zstd and unknown
/// media types are skipped (the snapshotter fetches them whole), which is not an error.
pub fn decide(media_type: &str, size: u64, min_size: u64) -> LayerDecision {
    let compression = match media_type {
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => LayerCompression::Gzip,
        media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR => LayerCompression::Uncompressed,
        other => return LayerDecision::Skip(format!("media type {other} has no zTOC format")),
    };
    if size < min_size {
        return LayerDecision::Skip(format!(
            "{size} bytes is under the minimum layer size {min_size}"
        ));
    }
    LayerDecision::Index(compression)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_by_media_type_and_size() {
        let min = 10 << 20;
        assert_eq!(
            decide(media::OCI_LAYER_GZIP, min, min),
            LayerDecision::Index(LayerCompression::Gzip)
        );
        assert_eq!(
            decide(media::DOCKER_LAYER_GZIP, min + 1, min),
            LayerDecision::Index(LayerCompression::Gzip)
        );
        assert_eq!(
            decide(media::OCI_LAYER_TAR, min, min),
            LayerDecision::Index(LayerCompression::Uncompressed)
        );
        assert_eq!(
            decide(media::DOCKER_LAYER_TAR, min, min),
            LayerDecision::Index(LayerCompression::Uncompressed)
        );
        assert!(
            matches!(decide(media::OCI_LAYER_GZIP, min - 1, min), LayerDecision::Skip(r) if r.contains("minimum"))
        );
        assert!(
            matches!(decide(media::OCI_LAYER_ZSTD, min, min), LayerDecision::Skip(r) if r.contains("zstd"))
        );
        assert!(matches!(
            decide("application/x-custom", min, min),
            LayerDecision::Skip(_)
        ));
    }
}
