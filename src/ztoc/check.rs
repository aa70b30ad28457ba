//! Does a zTOC agree with the layer it is said to describe? A check that needs only what
//! is known about the layer without reading it (its size, compression and the span size
//! asked for), for zTOCs that come from somewhere we do not fully trust (a cache).
//!
//! It proves that the zTOC is internally consistent and sized for this layer: every entry
//! within the uncompressed archive, one span digest per span, checkpoints in order and
//! within the blob. It cannot prove that the entries are the layer's own (a renamed entry
//! with every other field intact passes): only reading the layer again could.

use super::gzip::Checkpoints;
use super::{LayerCompression, Ztoc, ZtocError, TAR_ZINFO_VERSION, ZTOC_VERSION};

/// Deflate emits at least one bit per 258 bytes of output: no gzip layer inflates to more
/// than about 1032 times its size.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// A tar entry's data always follows its own 512-byte header.
const TAR_HEADER: i64 = 512;

/// What a zTOC must agree with: facts about its layer known without reading the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerFacts {
    /// The layer blob's size (its descriptor's `size`).
    pub size: u64,
    /// The layer's compression (from its media type).
    pub compression: LayerCompression,
    /// The span size the zTOC must have been built with.
    pub span_size: u64,
}

fn mismatch(what: String) -> ZtocError {
    ZtocError::InvalidZtoc(what)
}

impl Ztoc {
    /// Checks that this zTOC is consistent and describes a layer with these facts.
    ///
    /// # Errors
    /// [`ZtocError::InvalidZtoc`] naming the first disagreement.
    pub fn check_against(&self, layer: &LayerFacts) -> Result<(), ZtocError> {
        if self.version != ZTOC_VERSION {
            return Err(mismatch(format!(
                "version {:?}, expected {ZTOC_VERSION:?}",
                self.version
            )));
        }
        if self.compression_algorithm != layer.compression {
            return Err(mismatch(format!(
                "it describes a {} layer, the layer is {}",
                self.compression_algorithm.as_str(),
                layer.compression.as_str()
            )));
        }
        if u64::try_from(self.compressed_archive_size).ok() != Some(layer.size) {
            return Err(mismatch(format!(
                "compressed archive size {}, the layer has {} bytes",
                self.compressed_archive_size, layer.size
            )));
        }
        let max_uncompressed = match layer.compression {
            LayerCompression::Uncompressed => layer.size,
            LayerCompression::Gzip => layer.size.saturating_mul(MAX_DEFLATE_RATIO),
        };
        if u64::try_from(self.uncompressed_archive_size)
            .map_or(true, |size| size > max_uncompressed)
        {
            return Err(mismatch(format!(
                "uncompressed archive size {} is impossible for a {}-byte {} layer",
                self.uncompressed_archive_size,
                layer.size,
                layer.compression.as_str()
            )));
        }
        self.check_span_digests()?;
        let spans = match layer.compression {
            LayerCompression::Gzip => self.check_gzip_checkpoints(layer)?,
            LayerCompression::Uncompressed => self.check_tar_zinfo(layer)?,
        };
        if spans != self.span_digests.len() {
            return Err(mismatch(format!(
                "{} span digests for {spans} spans",
                self.span_digests.len()
            )));
        }
        self.check_entries()
    }

    fn check_span_digests(&self) -> Result<(), ZtocError> {
        let announced = i64::from(self.max_span_id) + 1;
        if announced != self.span_digests.len() as i64 {
            return Err(mismatch(format!(
                "max span id {} but {} span digests",
                self.max_span_id,
                self.span_digests.len()
            )));
        }
        for (i, digest) in self.span_digests.iter().enumerate() {
            let hex = digest.strip_prefix("sha256:").unwrap_or_default();
            let well_formed = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !well_formed {
                return Err(mismatch(format!(
                    "span digest {i} {digest:?} is not sha256:<64 hex>"
                )));
            }
        }
        Ok(())
    }

    /// Returns the number of spans the checkpoints define.
    fn check_gzip_checkpoints(&self, layer: &LayerFacts) -> Result<usize, ZtocError> {
        let checkpoints = Checkpoints::parse(&self.checkpoints)?;
        if u64::try_from(checkpoints.span_size).ok() != Some(layer.span_size) {
            return Err(mismatch(format!(
                "checkpoints made every {} bytes, expected a span size of {}",
                checkpoints.span_size, layer.span_size
            )));
        }
        let mut previous: Option<(u64, u64)> = None;
        for (i, c) in checkpoints.iter().enumerate() {
            let ordered = match previous {
                // The first checkpoint is where the first member's deflate data starts.
                None => c.uncompressed_offset == 0,
                // Later ones come more than a span after the previous one.
                // (Empty leading gzip members each get one at offset 0.)
                Some((compressed, uncompressed)) => {
                    c.compressed_offset > compressed
                        && ((c.uncompressed_offset == 0 && uncompressed == 0)
                            || c.uncompressed_offset.saturating_sub(uncompressed) > layer.span_size)
                }
            };
            if !ordered || c.compressed_offset > layer.size {
                return Err(mismatch(format!(
                    "checkpoint {i} (compressed offset {}, uncompressed offset {}) is out of order or outside the {}-byte layer",
                    c.compressed_offset, c.uncompressed_offset, layer.size
                )));
            }
            previous = Some((c.compressed_offset, c.uncompressed_offset));
        }
        Ok(checkpoints.len())
    }

    /// Returns the number of spans of the tar layer.
    fn check_tar_zinfo(&self, layer: &LayerFacts) -> Result<usize, ZtocError> {
        let (version, span_size, size) = self.tar_zinfo()?;
        if version != TAR_ZINFO_VERSION
            || u64::try_from(span_size).ok() != Some(layer.span_size)
            || u64::try_from(size).ok() != Some(layer.size)
        {
            return Err(mismatch(format!(
                "tar zinfo (version {version}, span size {span_size}, size {size}) does not match the layer (span size {}, {} bytes)",
                layer.span_size, layer.size
            )));
        }
        if layer.span_size == 0 {
            return Err(mismatch("a span size of 0".into()));
        }
        usize::try_from(layer.size.div_ceil(layer.span_size))
            .map_err(|_| mismatch("too many spans".into()))
    }

    /// Entries in tar order, each after a header, none past the end of the archive.
    fn check_entries(&self) -> Result<(), ZtocError> {
        let archive_end = self.uncompressed_archive_size;
        let mut next_data_start = TAR_HEADER;
        for f in &self.files {
            // Header-only types carry no data whatever their size field says.
            let data_size = if f.file_type == "reg" {
                f.uncompressed_size
            } else {
                0
            };
            let data_end = f.uncompressed_offset.checked_add(data_size);
            let fits = f.uncompressed_size >= 0
                && f.uncompressed_offset >= next_data_start
                && data_end.is_some_and(|end| end <= archive_end);
            if !fits {
                return Err(mismatch(format!(
                    "entry {:?} (offset {}, size {}) overlaps the previous one or ends past the {archive_end}-byte archive",
                    f.name, f.uncompressed_offset, f.uncompressed_size
                )));
            }
            next_data_start = data_end
                .and_then(|end| end.checked_add(TAR_HEADER))
                .unwrap_or(i64::MAX);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ztoc::{build_from_reader, ZtocOptions};

    const SPAN: u64 = 64 * 1024;

    fn tar_layer() -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for (i, size) in [0usize, 100, 300_000, 5].into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|k| (k * 7 + i) as u8).collect();
            let mut h = ::tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("f{i}"), &data[..]).unwrap();
        }
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "f1").unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, data).unwrap();
        gz.finish().unwrap()
    }

    fn built(layer: &[u8]) -> (Ztoc, LayerFacts) {
        let options = ZtocOptions {
            span_size: SPAN,
            ..ZtocOptions::default()
        };
        let ztoc = build_from_reader(layer, options, |_| {}).unwrap();
        let facts = LayerFacts {
            size: layer.len() as u64,
            compression: ztoc.compression_algorithm,
            span_size: SPAN,
        };
        (ztoc, facts)
    }

    fn refused(z: &Ztoc, facts: &LayerFacts, why: &str) {
        let err = z.check_against(facts).expect_err(why).to_string();
        assert!(err.starts_with("invalid zTOC: "), "{why}: {err}");
    }

    #[test]
    fn built_ztocs_agree_with_their_layers() {
        for layer in [tar_layer(), gzip(&tar_layer())] {
            let (z, facts) = built(&layer);
            assert!(z.span_digests.len() > 1, "several spans");
            z.check_against(&facts).unwrap();
        }
    }

    #[test]
    fn forged_fields_are_refused() {
        for layer in [tar_layer(), gzip(&tar_layer())] {
            let (good, facts) = built(&layer);
            let forge = |f: &dyn Fn(&mut Ztoc)| {
                let mut z = good.clone();
                f(&mut z);
                z
            };
            let other = |f: &dyn Fn(&mut LayerFacts)| {
                let mut l = facts;
                f(&mut l);
                l
            };
            refused(&good, &other(&|l| l.size += 1), "another layer size");
            refused(&good, &other(&|l| l.span_size *= 2), "another span size");
            let flipped = match facts.compression {
                LayerCompression::Gzip => LayerCompression::Uncompressed,
                LayerCompression::Uncompressed => LayerCompression::Gzip,
            };
            refused(&good, &other(&|l| l.compression = flipped), "compression");
            refused(&forge(&|z| z.version = "0.8".into()), &facts, "version");
            refused(
                &forge(&|z| {
                    z.span_digests.pop();
                }),
                &facts,
                "a span digest missing",
            );
            refused(
                &forge(&|z| {
                    z.span_digests.pop();
                    z.max_span_id -= 1;
                }),
                &facts,
                "a span missing",
            );
            refused(
                &forge(&|z| z.span_digests[0] = "sha256:xyz".into()),
                &facts,
                "digest",
            );
            refused(
                &forge(&|z| z.files[2].uncompressed_size = z.uncompressed_archive_size),
                &facts,
                "entry past the end",
            );
            refused(
                &forge(&|z| z.files[1].uncompressed_offset = z.files[0].uncompressed_offset),
                &facts,
                "entries overlapping",
            );
            refused(
                &forge(&|z| z.files[0].uncompressed_size = -1),
                &facts,
                "negative size",
            );
            refused(
                &forge(&|z| z.uncompressed_archive_size = -1),
                &facts,
                "negative archive",
            );
            refused(
                &forge(&|z| z.uncompressed_archive_size = i64::MAX),
                &facts,
                "huge archive",
            );
            refused(
                &forge(&|z| z.checkpoints.truncate(z.checkpoints.len() - 1)),
                &facts,
                "checkpoints cut",
            );
        }
    }

    #[test]
    fn gzip_checkpoints_must_be_ordered_and_within_the_layer() {
        let layer = gzip(&tar_layer());
        let (good, facts) = built(&layer);
        let at =
            |i: usize| crate::ztoc::gzip::BLOB_HEADER_SIZE + i * crate::ztoc::gzip::CHECKPOINT_SIZE;
        let mut z = good.clone();
        // Compressed offset of the second checkpoint past the layer's end.
        z.checkpoints[at(1)..at(1) + 8].copy_from_slice(&(layer.len() as u64 + 1).to_le_bytes());
        refused(&z, &facts, "checkpoint past the end");
        let mut z = good.clone();
        // Uncompressed offset of the second checkpoint within a span of the first.
        z.checkpoints[at(1) + 8..at(1) + 16].copy_from_slice(&1u64.to_le_bytes());
        refused(&z, &facts, "checkpoint too close");
        let mut z = good;
        // The first checkpoint not at the start of the data.
        z.checkpoints[at(0) + 8..at(0) + 16].copy_from_slice(&5u64.to_le_bytes());
        refused(&z, &facts, "first checkpoint");
    }
}
