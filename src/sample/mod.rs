//! Sample images with real layers, for the demo and the tests: deterministic (the same
//! spec always gives the same digests), written to any [`Repository`].
//!
//! This file is product code because `afterpush demo` (`cli/demo.rs`) writes its
//! single-platform images ([`write_image`]) and BuildKit caches ([`write_buildkit_cache`])
//! with it. The multi-arch samples only tests and benchmarks use are in `multi_arch.rs`,
//! built with the `test-util` feature.
//!
//! Layers are real tar streams — directories, files with content, a symlink, an xattr
//! and sub-second mtimes (PAX records) — gzip-compressed or left as plain tar. Large
//! layers are generated and compressed as a stream into a temporary file, then pushed
//! from it, so memory stays bounded whatever the size.
//!
//! Manifests are built as JSON values with sorted keys rather than with `oci-spec`
//! types: `oci-spec` keeps annotations in a `HashMap`, whose random iteration order
//! would make the bytes, and so the digests, differ between runs.

use crate::oci::{media, DigestWriter, Sha256Digest};
use crate::registry::{push_bytes, BlobRef, Manifest, RegistryError, Repository};
use bytes::Bytes;
use serde_json::{json, Value};
use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

#[cfg(feature = "test-util")]
mod multi_arch;
#[cfg(feature = "test-util")]
pub use multi_arch::{write_attestation, write_multi_arch, SampleIndex};

/// What can go wrong generating a sample.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    /// Reading or writing the repository failed.
    Registry(#[from] RegistryError),
    #[error("generating layer {layer} for {platform}: {source}")]
    /// Generating a layer's tar stream failed.
    Layer {
        /// The platform the layer is for.
        platform: String,
        /// The layer's position in the image.
        layer: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    #[error("invalid platform {0:?}: expected OS/ARCH or OS/ARCH/VARIANT")]
    /// A platform string that is not `OS/ARCH[/VARIANT]`.
    Platform(String),
    #[error("{0}")]
    /// A spec that cannot be generated (e.g. no platform for a multi-arch image).
    Spec(String),
}

/// What the sample writers return.
pub type Result<T, E = SampleError> = std::result::Result<T, E>;

/// Manifest media types to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI manifests and an OCI image index.
    #[default]
    Oci,
    /// Docker v2 schema 2 manifests and a Docker manifest list.
    Docker,
}

/// How layers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    #[default]
    /// gzip-compressed tar.
    Gzip,
    /// Plain, uncompressed tar.
    None,
}

/// A platform: `linux/amd64`, `linux/arm64`, `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SamplePlatform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture`, e.g. `arm64`.
    pub architecture: String,
    /// `variant`, e.g. `v7`.
    pub variant: Option<String>,
}

impl FromStr for SamplePlatform {
    type Err = SampleError;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(SampleError::Platform(s.to_string())),
        }
    }
}

impl fmt::Display for SamplePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl SamplePlatform {
    /// The tag suffix convention: `amd64`, `arm64`, `armv7`.
    pub fn arch_suffix(&self) -> String {
        format!(
            "{}{}",
            self.architecture,
            self.variant.as_deref().unwrap_or_default()
        )
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// Changes every digest; the same seed always gives the same bytes.
    pub seed: u64,
    /// The platforms of a multi-arch sample (one image each).
    pub platforms: Vec<SamplePlatform>,
    /// Uncompressed file-content bytes of each layer (the tar adds headers). Every
    /// platform gets one layer per entry. The text compresses about 3.2x with gzip:
    /// 40 MiB of content gives a ~12.3 MiB layer (over SOCI's 10 MiB default minimum).
    pub layer_sizes: Vec<u64>,
    /// Layer compression.
    pub compression: LayerCompression,
    /// OCI or Docker media types.
    pub format: ManifestFormat,
    /// Adds a buildx-style attestation manifest per platform to the index (OCI only:
    /// buildx switches to OCI media types whenever it attaches attestations).
    pub attestations: bool,
}

impl Default for SampleSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            platforms: vec![
                "linux/amd64".parse().expect("valid"),
                "linux/arm64".parse().expect("valid"),
            ],
            layer_sizes: vec![64 * 1024, 512 * 1024],
            compression: LayerCompression::Gzip,
            format: ManifestFormat::Oci,
            attestations: true,
        }
    }
}

impl SampleSpec {
    fn manifest_type(&self) -> &'static str {
        match self.format {
            ManifestFormat::Oci => media::OCI_MANIFEST,
            ManifestFormat::Docker => media::DOCKER_MANIFEST,
        }
    }
    fn config_type(&self) -> &'static str {
        match self.format {
            ManifestFormat::Oci => media::OCI_CONFIG,
            ManifestFormat::Docker => media::DOCKER_CONFIG,
        }
    }
    fn layer_type(&self) -> &'static str {
        match (self.format, self.compression) {
            (ManifestFormat::Oci, LayerCompression::Gzip) => media::OCI_LAYER_GZIP,
            (ManifestFormat::Oci, LayerCompression::None) => media::OCI_LAYER_TAR,
            (ManifestFormat::Docker, LayerCompression::Gzip) => media::DOCKER_LAYER_GZIP,
            (ManifestFormat::Docker, LayerCompression::None) => media::DOCKER_LAYER_TAR,
        }
    }
}

/// A layer as written: its descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleLayer {
    /// The compressed (or plain) layer blob as pushed.
    pub blob: BlobRef,
    /// The digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: Sha256Digest,
}

/// A single-platform image as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleImage {
    /// The image's platform.
    pub platform: SamplePlatform,
    /// The image manifest.
    pub manifest: BlobRef,
    /// The image config blob.
    pub config: BlobRef,
    /// The layers, in manifest order.
    pub layers: Vec<SampleLayer>,
}

/// A BuildKit registry cache manifest as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCache {
    /// The cache manifest.
    pub manifest: BlobRef,
    /// The cache config blob (`application/vnd.buildkit.cacheconfig.v0`).
    pub config: BlobRef,
    /// The cache layers, in manifest order.
    pub layers: Vec<SampleLayer>,
}

/// splitmix64: small, fast, and stable forever (unlike `rand`'s `StdRng`, whose
/// algorithm may change between versions and would change every sample digest).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn mix(seed: u64, text: &str) -> u64 {
    let d = Sha256Digest::of(format!("{seed}/{text}").as_bytes());
    u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Pseudo-random but compressible text (words from a seeded 512-word vocabulary),
/// exactly `remaining` bytes, produced as it is read.
struct PseudoText {
    rng: SplitMix64,
    vocabulary: Vec<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
    remaining: u64,
}

impl PseudoText {
    fn new(seed: u64, len: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let vocabulary = (0..512)
            .map(|_| {
                let len = 2 + (rng.next() % 9) as usize;
                (0..len)
                    .map(|_| b'a' + (rng.next() % 26) as u8)
                    .collect::<Vec<u8>>()
            })
            .collect();
        Self {
            rng,
            vocabulary,
            pending: Vec::new(),
            pos: 0,
            remaining: len,
        }
    }
}

impl PseudoText {
    /// Refills `pending` with about 4 KiB of words.
    fn refill(&mut self) {
        self.pending.clear();
        self.pos = 0;
        while self.pending.len() < 4096 {
            let r = self.rng.next();
            self.pending
                .extend_from_slice(&self.vocabulary[(r % 512) as usize]);
            self.pending
                .push(if (r >> 32) % 12 == 0 { b'\n' } else { b' ' });
        }
    }
}

impl Read for PseudoText {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let mut n = 0;
        while n < want {
            if self.pos == self.pending.len() {
                self.refill();
            }
            let take = (self.pending.len() - self.pos).min(want - n);
            buf[n..n + take].copy_from_slice(&self.pending[self.pos..self.pos + take]);
            self.pos += take;
            n += take;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Hashes and counts what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: DigestWriter,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One PAX extended-header record: `<len> <key>=<value>\n`, where `<len>` counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

const EPOCH: u64 = 1_700_000_000;

/// Writes tar entries, each preceded by a PAX header carrying a sub-second mtime (and
/// xattrs when given), as BuildKit and GNU tar write them.
struct LayerTar<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
    rng: SplitMix64,
}

impl LayerTar<'_> {
    fn entry(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        xattrs: &[(&str, &str)],
        data: &mut dyn Read,
    ) -> std::io::Result<()> {
        let nanos = self.rng.next() % 1_000_000_000;
        let mut records = pax_record("mtime", &format!("{EPOCH}.{nanos:09}"));
        for (k, v) in xattrs {
            records.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_mode(0o644);
        pax.set_size(records.len() as u64);
        pax.set_mtime(EPOCH);
        let pax_name = format!("PaxHeaders/{}", path.trim_end_matches('/'));
        let pax_name = &pax_name[..pax_name.len().min(99)];
        self.tar
            .append_data(&mut pax, pax_name, records.as_slice())?;

        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(EPOCH);
        self.tar.append_data(header, path, data)
    }

    fn dir(&mut self, path: &str) -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        self.entry(&mut h, path, &[], &mut std::io::empty())
    }

    fn file(
        &mut self,
        path: &str,
        xattrs: &[(&str, &str)],
        size: u64,
        data: &mut dyn Read,
    ) -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        self.entry(&mut h, path, xattrs, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_link_name(target)?;
        self.entry(&mut h, path, &[], &mut std::io::empty())
    }
}

/// Content files are at most this large; bigger layers get more files.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// Writes the layer's tar stream to `out`.
fn write_layer_tar(
    out: &mut dyn Write,
    seed: u64,
    label: &str,
    content_size: u64,
) -> std::io::Result<()> {
    let mut t = LayerTar {
        tar: tar::Builder::new(out),
        rng: SplitMix64(seed),
    };
    t.dir("etc/")?;
    let release = format!("layer={label}\nseed={seed}\n");
    t.file(
        "etc/afterpush-sample",
        &[("user.afterpush", "sample")],
        release.len() as u64,
        &mut release.as_bytes(),
    )?;
    t.dir("usr/")?;
    t.dir("usr/share/")?;
    t.dir("usr/share/sample/")?;
    let mut left = content_size;
    let mut n = 0;
    while left > 0 || n == 0 {
        let len = left.min(MAX_FILE);
        let mut text = PseudoText::new(mix(seed, &format!("{label}/{n}")), len);
        t.file(
            &format!("usr/share/sample/data-{n}.txt"),
            &[],
            len,
            &mut text,
        )?;
        left -= len;
        n += 1;
    }
    t.symlink("usr/share/sample/latest", "data-0.txt")?;
    t.tar.finish()
}

/// Generates one layer into a temporary file and pushes it.
async fn write_layer(
    repo: &dyn Repository,
    spec: &SampleSpec,
    platform_label: &str,
    index: usize,
    content_size: u64,
) -> Result<SampleLayer> {
    let seed = mix(spec.seed, &format!("{platform_label}/layer-{index}"));
    let compression = spec.compression;
    let label = format!("{platform_label}/{index}");
    let layer_err = |source| SampleError::Layer {
        platform: platform_label.to_string(),
        layer: index,
        source,
    };
    let (tmp, digest, size, diff_id) = tokio::task::spawn_blocking(move || {
        let tmp = tempfile::Builder::new()
            .prefix("afterpush-sample-")
            .tempfile()?;
        let file = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?);
        let mut compressed = HashingWriter {
            inner: file,
            hasher: DigestWriter::new(),
            count: 0,
        };
        let diff_id = match compression {
            LayerCompression::Gzip => {
                // Header fields fixed (mtime 0, no name) so the bytes are reproducible.
                let gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(&mut compressed, flate2::Compression::default());
                let mut plain = HashingWriter {
                    inner: gz,
                    hasher: DigestWriter::new(),
                    count: 0,
                };
                write_layer_tar(&mut plain, seed, &label, content_size)?;
                plain.inner.finish()?;
                plain.hasher.finish()
            }
            LayerCompression::None => {
                write_layer_tar(&mut compressed, seed, &label, content_size)?;
                compressed.hasher.clone().finish()
            }
        };
        compressed.flush()?;
        let digest = compressed.hasher.finish();
        let size = compressed.count;
        Ok::<_, std::io::Error>((tmp, digest, size, diff_id))
    })
    .await
    .map_err(|e| layer_err(std::io::Error::other(e)))?
    .map_err(layer_err)?;
    let file = tokio::fs::File::open(tmp.path()).await.map_err(layer_err)?;
    let stream = crate::registry::layout::file_stream(file, size, None, tmp.path().to_path_buf());
    repo.push_blob(&digest, size, stream).await?;
    Ok(SampleLayer {
        blob: BlobRef {
            media_type: spec.layer_type().to_string(),
            digest,
            size,
        },
        diff_id,
    })
}

fn descriptor_json(b: &BlobRef) -> Value {
    json!({ "mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size })
}

async fn push_json(repo: &dyn Repository, media_type: &str, value: &Value) -> Result<BlobRef> {
    let bytes = Bytes::from(serde_json::to_vec(value).expect("JSON values serialise"));
    let size = bytes.len() as u64;
    let digest = push_bytes(repo, bytes).await?;
    Ok(BlobRef {
        media_type: media_type.to_string(),
        digest,
        size,
    })
}

async fn put_json_manifest(
    repo: &dyn Repository,
    media_type: &str,
    value: &Value,
    tag: Option<&str>,
) -> Result<BlobRef> {
    let manifest = Manifest::new(
        media_type,
        serde_json::to_vec(value).expect("JSON values serialise"),
    );
    repo.put_manifest(&manifest, tag).await?;
    Ok(manifest.descriptor())
}

/// Writes one single-platform image (layers, config, manifest), tagged when `tag` is set.
pub async fn write_image(
    repo: &dyn Repository,
    spec: &SampleSpec,
    platform: &SamplePlatform,
    tag: Option<&str>,
) -> Result<SampleImage> {
    let label = platform.to_string();
    let mut layers = Vec::new();
    for (i, size) in spec.layer_sizes.iter().enumerate() {
        layers.push(write_layer(repo, spec, &label, i, *size).await?);
    }
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "org.opencontainers.image.source": "https://example.com/afterpush-sample" },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "history": (0..layers.len()).map(|i| json!({
            "created": "2023-11-14T22:13:20Z",
            "created_by": format!("afterpush sample layer {i} (seed {})", spec.seed),
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    let config = push_json(repo, spec.config_type(), &config).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": spec.manifest_type(),
        "config": descriptor_json(&config),
        "layers": layers.iter().map(|l| descriptor_json(&l.blob)).collect::<Vec<_>>(),
    });
    let manifest = put_json_manifest(repo, spec.manifest_type(), &manifest, tag).await?;
    Ok(SampleImage {
        platform: platform.clone(),
        manifest,
        config,
        layers,
    })
}

/// Writes a BuildKit registry cache manifest (`--cache-to type=registry,image-manifest=true`
/// shape: an OCI manifest whose config is `application/vnd.buildkit.cacheconfig.v0`),
/// with one gzip layer per entry of `spec.layer_sizes`.
pub async fn write_buildkit_cache(
    repo: &dyn Repository,
    spec: &SampleSpec,
    tag: Option<&str>,
) -> Result<SampleCache> {
    let gzip_spec = SampleSpec {
        format: ManifestFormat::Oci,
        compression: LayerCompression::Gzip,
        ..spec.clone()
    };
    let mut layers = Vec::new();
    for (i, size) in spec.layer_sizes.iter().enumerate() {
        layers.push(write_layer(repo, &gzip_spec, "buildkit-cache", i, *size).await?);
    }
    let config = json!({
        "layers": layers.iter().enumerate().map(|(i, l)| json!({
            "blob": l.blob.digest.to_string(),
            "parent": if i == 0 { -1 } else { i as i64 - 1 },
        })).collect::<Vec<_>>(),
        "records": layers.iter().enumerate().map(|(i, _)| json!({
            "digest": Sha256Digest::of(format!("cache-record-{}-{i}", spec.seed).as_bytes()).to_string(),
            "layers": [{ "layer": i }],
        })).collect::<Vec<_>>(),
    });
    let config = push_json(repo, media::BUILDKIT_CACHE_CONFIG, &config).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor_json(&config),
        "layers": layers.iter().map(|l| {
            let mut d = descriptor_json(&l.blob);
            d["annotations"] = json!({
                "buildkit/createdat": "2023-11-14T22:13:20Z",
                "containerd.io/uncompressed": l.diff_id.to_string(),
            });
            d
        }).collect::<Vec<_>>(),
    });
    let manifest = put_json_manifest(repo, media::OCI_MANIFEST, &manifest, tag).await?;
    Ok(SampleCache {
        manifest,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_platforms() {
        let p: SamplePlatform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(p.arch_suffix(), "armv7");
        for bad in ["linux", "linux/", "Linux/amd64", "a/b/c/d"] {
            let err = bad.parse::<SamplePlatform>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    proptest! {
        #[test]
        fn pax_record_length_counts_itself(key in "[a-z.]{1,40}", value in ".{0,300}") {
            let rec = pax_record(&key, &value);
            let text = String::from_utf8(rec.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            prop_assert_eq!(len.parse::<usize>().unwrap(), rec.len());
        }

        #[test]
        fn pseudo_text_has_exact_length_and_is_deterministic(seed: u64, len in 0u64..20_000) {
            let mut a = Vec::new();
            PseudoText::new(seed, len).read_to_end(&mut a).unwrap();
            let mut b = Vec::new();
            PseudoText::new(seed, len).read_to_end(&mut b).unwrap();
            prop_assert_eq!(a.len() as u64, len);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn layer_tar_has_every_entry_kind() {
        let mut out = Vec::new();
        write_layer_tar(&mut out, 7, "t", 10).unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let xattrs: Vec<String> = e
                .pax_extensions()
                .unwrap()
                .map(|exts| {
                    exts.map(|ext| ext.unwrap().key().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            seen.push((path, kind, xattrs));
        }
        assert!(seen
            .iter()
            .any(|(p, k, _)| p == "usr/share/sample/latest" && *k == tar::EntryType::Symlink));
        assert!(seen
            .iter()
            .any(|(p, k, _)| p == "etc/" && *k == tar::EntryType::Directory));
        let release = seen
            .iter()
            .find(|(p, _, _)| p == "etc/afterpush-sample")
            .unwrap();
        assert!(
            release
                .2
                .contains(&"SCHILY.xattr.user.afterpush".to_string()),
            "{release:?}"
        );
        assert!(release.2.contains(&"mtime".to_string()), "{release:?}");
    }
}
