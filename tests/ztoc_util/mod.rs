//! Helpers shared by the zTOC integration tests: building layers, checking zTOCs
//! against an independent decompression (flate2) and an independent, one-shot zran
//! pass over the whole blob (libz-rs-sys, no ring, no chunking).
#![allow(dead_code)]

use afterpush::ztoc::{self, LayerCompression, Ztoc, ZtocBuilder, ZtocOptions};
use libz_rs_sys as z;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Builds a zTOC feeding the blob in the given chunk sizes (cycled).
pub fn build(blob: &[u8], span: u64, chunks: &[usize]) -> Result<Ztoc, ztoc::ZtocError> {
    fed(blob, span, chunks)?.finish()
}

/// [`build`], encoded by [`ZtocBuilder::finish_encoded`].
pub fn build_encoded(
    blob: &[u8],
    span: u64,
    chunks: &[usize],
) -> Result<ztoc::EncodedZtoc, ztoc::ZtocError> {
    fed(blob, span, chunks)?.finish_encoded()
}

fn fed(blob: &[u8], span: u64, chunks: &[usize]) -> Result<ZtocBuilder, ztoc::ZtocError> {
    let compression = ztoc::detect_compression(blob).unwrap_or(LayerCompression::Gzip);
    let mut b = ZtocBuilder::new(
        compression,
        ZtocOptions {
            span_size: span,
            build_tool_identifier: "test".into(),
        },
    );
    let mut rest = blob;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].max(1).min(rest.len());
        b.feed(&rest[..n])?;
        rest = &rest[n..];
        i += 1;
    }
    Ok(b)
}

/// gzip with flate2 at `level`; split into members at `cuts` (offsets into `data`).
pub fn gzip_members(data: &[u8], level: u32, cuts: &[usize]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for w in points.windows(2) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        enc.write_all(&data[w[0]..w[1]]).unwrap();
        out.extend(enc.finish().unwrap());
    }
    if out.is_empty() {
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        out = enc.finish().unwrap();
    }
    out
}

/// Full decompression with flate2 (multi-member).
pub fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// (in, out, bits) of every checkpoint, computed in one call per block over the whole
/// blob with a whole-output buffer: the zran rule, written independently of the builder.
pub fn reference_checkpoints(blob: &[u8], total_out: usize, span: u64) -> Vec<(u64, u64, u8)> {
    let mut out = vec![0u8; total_out + 1];
    let mut strm: Box<z::z_stream> = Box::default();
    let mut points = Vec::new();
    unsafe {
        assert_eq!(
            z::inflateInit2_(
                &mut *strm,
                31,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32
            ),
            z::Z_OK
        );
        strm.next_in = blob.as_ptr();
        strm.avail_in = blob.len() as u32;
        strm.next_out = out.as_mut_ptr();
        strm.avail_out = out.len() as u32;
        let mut last = 0u64;
        loop {
            let ret = z::inflate(&mut *strm, z::Z_BLOCK);
            let totin = (blob.len() - strm.avail_in as usize) as u64;
            let totout = (out.len() - strm.avail_out as usize) as u64;
            if ret == z::Z_STREAM_END {
                if strm.avail_in == 0 {
                    break;
                }
                assert_eq!(z::inflateReset2(&mut *strm, 31), z::Z_OK);
                continue;
            }
            assert_eq!(ret, z::Z_OK, "reference inflate failed");
            let dt = strm.data_type;
            if dt & 128 != 0 && dt & 64 == 0 && (totout == 0 || totout - last > span) {
                points.push((totin, totout, (dt & 7) as u8));
                last = totout;
            }
        }
        z::inflateEnd(&mut *strm);
    }
    points
}

/// Raw-inflates `n` bytes starting at a checkpoint (prime + dictionary), crossing gzip
/// members like the snapshotter does.
pub fn inflate_from(blob: &[u8], cin: u64, bits: u8, window: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut strm: Box<z::z_stream> = Box::default();
    unsafe {
        assert_eq!(
            z::inflateInit2_(
                &mut *strm,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32
            ),
            z::Z_OK
        );
        let mut start = cin as usize;
        if bits != 0 {
            let byte = blob[start - 1];
            assert_eq!(
                z::inflatePrime(&mut *strm, bits as i32, (byte >> (8 - bits)) as i32),
                z::Z_OK
            );
        }
        assert_eq!(
            z::inflateSetDictionary(&mut *strm, window.as_ptr(), window.len() as u32),
            z::Z_OK
        );
        let mut produced = 0usize;
        let mut raw = true;
        while produced < n {
            strm.next_in = blob[start..].as_ptr();
            strm.avail_in = (blob.len() - start) as u32;
            strm.next_out = out[produced..].as_mut_ptr();
            strm.avail_out = (n - produced) as u32;
            let ret = z::inflate(&mut *strm, z::Z_NO_FLUSH);
            start = blob.len() - strm.avail_in as usize;
            produced = n - strm.avail_out as usize;
            if ret == z::Z_STREAM_END {
                if raw {
                    start += 8;
                    raw = false;
                }
                if start >= blob.len() {
                    break;
                }
                assert_eq!(z::inflateReset2(&mut *strm, 31), z::Z_OK);
                continue;
            }
            assert_eq!(ret, z::Z_OK);
        }
        z::inflateEnd(&mut *strm);
        out.truncate(produced);
    }
    out
}

/// Checks every property of a gzip layer's zTOC that can be computed another way.
pub fn check_gzip_ztoc(z: &Ztoc, blob: &[u8], span: u64) {
    let plain = gunzip(blob);
    assert_eq!(z.compressed_archive_size as usize, blob.len());
    let cps = z.gzip_checkpoints().expect("checkpoints parse");
    assert_eq!(cps.span_size as u64, span);
    assert_eq!(z.max_span_id as usize + 1, cps.len());
    assert_eq!(z.span_digests.len(), cps.len());
    let reference = reference_checkpoints(blob, plain.len(), span);
    let ours: Vec<_> = cps
        .iter()
        .map(|c| (c.compressed_offset, c.uncompressed_offset, c.bits))
        .collect();
    assert_eq!(
        ours, reference,
        "checkpoints differ from the one-shot zran pass"
    );
    for (i, c) in cps.iter().enumerate() {
        let out = c.uncompressed_offset as usize;
        // Window: the 32 KiB before `out`, zero-padded at the front.
        let mut expected = vec![0u8; ztoc::WINDOW_SIZE];
        let have = out.min(ztoc::WINDOW_SIZE);
        expected[ztoc::WINDOW_SIZE - have..].copy_from_slice(&plain[out - have..out]);
        if c.window != &expected[..] {
            let first = (0..expected.len())
                .find(|&k| c.window[k] != expected[k])
                .unwrap();
            let last = (0..expected.len())
                .rev()
                .find(|&k| c.window[k] != expected[k])
                .unwrap();
            panic!("window of checkpoint {i} (out {out}) differs at {first}..={last}");
        }
        // Restoring from the checkpoint yields the bytes that follow.
        let n = (plain.len() - out).min(3 * span as usize + 70_000);
        let got = inflate_from(blob, c.compressed_offset, c.bits, c.window, n);
        assert!(
            got == plain[out..out + n],
            "restore from checkpoint {i} differs"
        );
        // Span digest recomputed from the blob.
        let (s, e) = (
            cps.span_start(i) as usize,
            cps.span_end(i, blob.len() as u64) as usize,
        );
        let d = format!("sha256:{}", hex::encode(Sha256::digest(&blob[s..e])));
        assert_eq!(z.span_digests[i], d, "span {i} digest");
    }
}

/// Checks the TOC against the decompressed tar: every regular file's offset holds its
/// content, and `extract_file` restores it.
pub fn check_files(z: &Ztoc, blob: &[u8], expected: &[(String, Vec<u8>)]) {
    for (name, content) in expected {
        let got = ztoc::extract_file(z, &blob.to_vec(), name)
            .unwrap_or_else(|e| panic!("extract {name:?}: {e}"));
        assert!(
            got == *content,
            "content of {name:?} differs ({} vs {} bytes)",
            got.len(),
            content.len()
        );
    }
}
