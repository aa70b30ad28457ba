//! OCI image layout repositories: a directory ([`LayoutRepository`]) and an `oci-archive`
//! tarball of one ([`ArchiveRepository`]).
//!
//! A layout is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json` and
//! `blobs/sha256/<hex>`. Tags are the `org.opencontainers.image.ref.name` annotations of
//! the `index.json` entries; manifests are blobs like any other.
//!
//! Crash safety: a blob is written to a temporary file inside the layout and renamed
//! into place once its digest checked out, and `index.json` is rewritten through a
//! temporary file and a rename, so a reader never sees half-written content.
//!
//! Referrers: a layout has no referrers API. Untagged manifests that carry a `subject`
//! get an untagged `index.json` entry when they are stored (so they are reachable, as
//! `oras` does it), and [`Repository::referrers`] scans the `index.json` entries for
//! manifests whose `subject` is the digest asked for. Referrers published through the
//! `sha256-<hex>` tag schema (an index tagged with the subject's digest) are included too.

use super::{BlobRef, BlobStream, Manifest, RegistryError, Repository, Result, MAX_MANIFEST_SIZE};
use crate::oci::{
    annotation, media, DescriptorSummary, DigestWriter, ManifestSummary, Sha256Digest,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// `index.json` is an image index: registries refuse indexes over 4 MiB, and so do we
/// here, on reads (a 157 MB one took 2.3 GB of memory to parse) and on writes (so that
/// we never write one we would refuse to read). About 15,000 tags fit.
pub const MAX_INDEX_JSON_SIZE: usize = MAX_MANIFEST_SIZE;

fn index_too_large(path: &Path) -> RegistryError {
    RegistryError::Invalid {
        location: path.display().to_string(),
        message: format!(
            "over the {MAX_INDEX_JSON_SIZE}-byte limit of an image index (too many tags or referrers in one layout)"
        ),
    }
}

/// Chunk size of blob reads.
const READ_CHUNK: usize = 256 * 1024;

fn io_err(path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An OCI image layout directory holding one repository.
#[derive(Debug)]
pub struct LayoutRepository {
    root: PathBuf,
    /// What [`Repository::location`] says (`oci:DIR`, or `oci-archive:FILE` when this
    /// layout is the unpacked copy of an archive).
    location: String,
    /// Serialises read-modify-write cycles of `index.json`.
    index_lock: tokio::sync::Mutex<()>,
    /// What [`Self::open_or_create`] made: `Some(true)` the directory, `Some(false)` the
    /// layout in a directory that was empty. [`Repository::discard`] undoes it.
    created: Option<bool>,
    /// Blobs (manifests included) this value wrote that were not there before.
    new_blobs: std::sync::Mutex<Vec<Sha256Digest>>,
}

/// One `index.json` entry, kept as JSON so that fields we do not know survive a rewrite.
fn entry_digest(entry: &Value) -> Option<Sha256Digest> {
    entry.get("digest")?.as_str()?.parse().ok()
}

fn entry_tag(entry: &Value) -> Option<&str> {
    entry
        .get("annotations")?
        .get(annotation::REF_NAME)?
        .as_str()
}

fn entry_media_type(entry: &Value) -> Option<&str> {
    entry.get("mediaType")?.as_str()
}

fn entry_size(entry: &Value) -> Option<u64> {
    entry.get("size")?.as_u64()
}

/// Splits a reference into a digest or a tag; anything else is an error naming it.
enum Reference {
    Digest(Sha256Digest),
    Tag(String),
}

fn parse_reference(location: &str, reference: &str) -> Result<Reference> {
    if reference.starts_with("sha256:") {
        return Ok(Reference::Digest(reference.parse()?));
    }
    if super::reference::is_valid_tag(reference) {
        Ok(Reference::Tag(reference.to_string()))
    } else {
        Err(RegistryError::Invalid {
            location: location.to_string(),
            message: format!("{reference:?} is neither a valid tag nor a sha256 digest"),
        })
    }
}

impl LayoutRepository {
    /// Opens an existing layout; fails naming the path when it is not one.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let marker = root.join("oci-layout");
        let text = std::fs::read_to_string(&marker).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    what: "OCI image layout (its oci-layout file)".into(),
                    location: root.display().to_string(),
                }
            } else {
                io_err(&marker, e)
            }
        })?;
        let version: Value = serde_json::from_str(&text).map_err(|e| RegistryError::Invalid {
            location: marker.display().to_string(),
            message: format!("not JSON: {e}"),
        })?;
        match version.get("imageLayoutVersion").and_then(Value::as_str) {
            Some(v) if v.starts_with("1.") => {}
            other => {
                return Err(RegistryError::Invalid {
                    location: marker.display().to_string(),
                    message: format!("unsupported imageLayoutVersion {other:?} (expected 1.x)"),
                })
            }
        }
        Ok(Self::at(root))
    }

    /// Opens the layout at `root`, creating the directory and an empty layout when there
    /// is none yet. A non-empty directory without `oci-layout` is refused (we never write
    /// into somebody else's directory).
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.join("oci-layout").exists() {
            return Self::open(root);
        }
        let created_dir = !root.exists();
        std::fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let non_empty = std::fs::read_dir(&root)
            .map_err(|e| io_err(&root, e))?
            .next()
            .is_some();
        if non_empty {
            return Err(RegistryError::Invalid {
                location: root.display().to_string(),
                message:
                    "the directory is not empty and is not an OCI image layout (no oci-layout file)"
                        .into(),
            });
        }
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, e))?;
        write_atomically(&root, "index.json", &empty_index_bytes())?;
        write_atomically(&root, "oci-layout", OCI_LAYOUT_FILE_CONTENT.as_bytes())?;
        Ok(Self {
            created: Some(created_dir),
            ..Self::at(root)
        })
    }

    fn at(root: PathBuf) -> Self {
        Self {
            location: format!("oci:{}", root.display()),
            root,
            index_lock: tokio::sync::Mutex::new(()),
            created: None,
            new_blobs: Default::default(),
        }
    }

    /// Every blob `index.json` reaches: its entries, and what their manifests name,
    /// down every index.
    fn referenced_blobs(&self) -> Result<HashSet<Sha256Digest>> {
        let mut referenced = HashSet::new();
        let mut queue: Vec<Sha256Digest> =
            self.entries()?.iter().filter_map(entry_digest).collect();
        while let Some(d) = queue.pop() {
            if !referenced.insert(d.clone()) {
                continue;
            }
            let (_, summary) = match self.read_manifest_blob(&d.to_string(), &d) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            for desc in summary.config.iter().chain(&summary.layers) {
                referenced.insert(desc.digest.parse()?);
            }
            for desc in &summary.manifests {
                queue.push(desc.digest.parse()?);
            }
        }
        Ok(referenced)
    }

    /// The manifest an untagged reference (`oci:DIR`) means: the only `index.json`
    /// entry, as skopeo reads it. `None` when there are none or several.
    pub fn sole_entry(&self) -> Result<Option<Sha256Digest>> {
        let entries = self.entries()?;
        Ok(match entries.as_slice() {
            [one] => entry_digest(one),
            _ => None,
        })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Reads `index.json`, refusing one over [`MAX_INDEX_JSON_SIZE`] before reading it.
    fn read_index(&self) -> Result<Value> {
        let path = self.index_path();
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| {
                f.take(MAX_INDEX_JSON_SIZE as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| io_err(&path, e))?;
        if bytes.len() > MAX_INDEX_JSON_SIZE {
            return Err(index_too_large(&path));
        }
        let index: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            location: path.display().to_string(),
            message: format!("not JSON: {e}"),
        })?;
        if !index.get("manifests").is_some_and(Value::is_array) {
            return Err(RegistryError::Invalid {
                location: path.display().to_string(),
                message: "no \"manifests\" array".into(),
            });
        }
        Ok(index)
    }

    /// The `index.json` entries as (digest, tag) pairs, in file order: the roots of the
    /// layout (the cleanup catalog lists images from them).
    pub fn index_entries(&self) -> Result<Vec<(Sha256Digest, Option<String>)>> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|e| Some((entry_digest(e)?, entry_tag(e).map(str::to_string))))
            .collect())
    }

    fn entries(&self) -> Result<Vec<Value>> {
        Ok(self.read_index()?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    fn write_index(&self, index: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(index).expect("JSON values serialise");
        if bytes.len() > MAX_INDEX_JSON_SIZE {
            return Err(index_too_large(&self.index_path()));
        }
        write_atomically(&self.root, "index.json", &bytes)
    }

    /// Finds the `index.json` entry for a reference (the last one for a tag, as a
    /// rewrite appends).
    fn find_entry(&self, reference: &Reference) -> Result<Option<Value>> {
        let entries = self.entries()?;
        Ok(entries.into_iter().rev().find(|e| match reference {
            Reference::Tag(t) => entry_tag(e) == Some(t.as_str()),
            Reference::Digest(d) => entry_digest(e).as_ref() == Some(d),
        }))
    }

    fn not_found(&self, what: String) -> RegistryError {
        RegistryError::NotFound {
            what,
            location: self.location.clone(),
        }
    }

    /// Reads a manifest blob: size-limited, digest-verified, JSON-checked.
    fn read_manifest_blob(
        &self,
        reference: &str,
        digest: &Sha256Digest,
    ) -> Result<(Bytes, ManifestSummary)> {
        let path = self.blob_path(digest);
        let what = format!("manifest {reference} in {}", self.location);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(format!("manifest {reference} (blob {digest})")))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        if len > MAX_MANIFEST_SIZE as u64 {
            return Err(RegistryError::ManifestTooLarge {
                what,
                size: len as usize,
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        digest.verify(&what, &bytes)?;
        let summary = ManifestSummary::parse(&what, &bytes)?;
        Ok((Bytes::from(bytes), summary))
    }

    /// Resolves to (entry media type if known, digest).
    fn lookup(&self, reference: &str) -> Result<(Option<String>, Sha256Digest, Option<u64>)> {
        let parsed = parse_reference(&self.location, reference)?;
        let entry = self.find_entry(&parsed)?;
        match (parsed, entry) {
            (_, Some(e)) => {
                let digest = entry_digest(&e).ok_or_else(|| RegistryError::Invalid {
                    location: self.index_path().display().to_string(),
                    message: format!("the entry for {reference} has no valid sha256 digest"),
                })?;
                Ok((
                    entry_media_type(&e).map(str::to_string),
                    digest,
                    entry_size(&e),
                ))
            }
            (Reference::Tag(tag), None) => Err(self.not_found(format!("tag {tag:?}"))),
            // Children of an index are not in index.json: they are blobs.
            (Reference::Digest(d), None) => Ok((None, d, None)),
        }
    }

    fn read_manifest(&self, reference: &str) -> Result<Manifest> {
        let (entry_type, digest, entry_size) = self.lookup(reference)?;
        let (bytes, summary) = self.read_manifest_blob(reference, &digest)?;
        if let Some(size) = entry_size {
            if size != bytes.len() as u64 {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!(
                        "index.json says manifest {reference} ({digest}) is {size} bytes; the blob has {}",
                        bytes.len()
                    ),
                });
            }
        }
        let media_type = summary
            .effective_media_type(entry_type.as_deref())
            .to_string();
        Ok(Manifest {
            media_type,
            digest,
            bytes,
        })
    }

    fn blob_present(&self, digest: &Sha256Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Writes small content as a blob (atomically) unless present.
    fn write_blob_bytes(&self, digest: &Sha256Digest, bytes: &[u8]) -> Result<()> {
        if self.blob_present(digest) {
            return Ok(());
        }
        let dir = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        write_atomically(&dir, &digest.hex(), bytes)?;
        self.new_blobs.lock().unwrap().push(digest.clone());
        Ok(())
    }

    /// The referrers of each of `digests`, from one scan of `index.json`: each entry's
    /// manifest is read once whatever the number of digests (asking one digest at a
    /// time re-read every entry, the tagged index with its thousands of children
    /// included, for each of them).
    fn referrers_sync(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        // A digest asked for twice gets its answer twice.
        let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in digests.iter().enumerate() {
            positions.entry(d.to_string()).or_default().push(i);
        }
        let mut found: Vec<Vec<DescriptorSummary>> = vec![Vec::new(); digests.len()];
        let mut seen: Vec<BTreeSet<Sha256Digest>> = vec![BTreeSet::new(); digests.len()];
        let entries = self.entries()?;
        let mut read = BTreeSet::new();
        for entry in &entries {
            let Some(d) = entry_digest(entry) else {
                continue;
            };
            if !read.insert(d.clone()) {
                continue;
            }
            let mt = entry_media_type(entry).unwrap_or_default();
            if !(media::is_image_manifest(mt) || media::is_index(mt)) {
                continue;
            }
            let (bytes, summary) = match self.read_manifest_blob(&d.to_string(), &d) {
                Ok(x) => x,
                // A dangling or broken entry is not a referrer; resolving it reports it.
                Err(_) => continue,
            };
            let Some(at) = summary
                .subject
                .as_ref()
                .and_then(|s| positions.get(s.digest.as_str()))
            else {
                continue;
            };
            for &i in at {
                seen[i].insert(d.clone());
                found[i].push(DescriptorSummary {
                    media_type: summary.effective_media_type(Some(mt)).to_string(),
                    digest: d.to_string(),
                    size: bytes.len() as u64,
                    artifact_type: summary.artifact_type().map(str::to_string),
                    annotations: summary.annotations.clone(),
                    platform: None,
                });
            }
        }
        // The referrers tag schema: `sha256-<hex>` tags an index listing the referrers
        // (the last entry of a tag wins, as for every tag).
        let mut tagged: HashMap<&str, Sha256Digest> = HashMap::new();
        for entry in &entries {
            if let (Some(tag), Some(d)) = (entry_tag(entry), entry_digest(entry)) {
                tagged.insert(tag, d);
            }
        }
        for (i, digest) in digests.iter().enumerate() {
            let schema_tag = format!("sha256-{}", digest.hex());
            if let Some(d) = tagged.get(schema_tag.as_str()) {
                let (_, summary) = self.read_manifest_blob(&schema_tag, d)?;
                for desc in summary.manifests {
                    if seen[i].insert(desc.digest.parse()?) {
                        found[i].push(desc);
                    }
                }
            }
        }
        for list in &mut found {
            if let Some(at) = artifact_type {
                list.retain(|d| d.artifact_type.as_deref() == Some(at));
            }
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        Ok(found)
    }
}

fn empty_index_bytes() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [],
    }))
    .expect("JSON values serialise")
}

/// Writes `dir/name` through a temporary file in `dir` and a rename.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    crate::files::write_atomically(&target, bytes).map_err(|e| io_err(&target, e))
}

/// A blob stream over a file (already positioned), `len` bytes long. With `verify`, the
/// digest and length of the whole are checked at the end and a mismatch is the last item.
pub(crate) fn file_stream(
    file: tokio::fs::File,
    len: u64,
    verify: Option<(Sha256Digest, String)>,
    path: PathBuf,
) -> BlobStream {
    struct State {
        inner: tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>,
        hasher: Option<DigestWriter>,
        verify: Option<(Sha256Digest, String)>,
        read: u64,
        len: u64,
        path: PathBuf,
        done: bool,
    }
    let state = State {
        inner: tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK),
        hasher: verify.as_ref().map(|_| DigestWriter::new()),
        verify,
        read: 0,
        len,
        path,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                if let Some(h) = s.hasher.as_mut() {
                    h.update(&chunk);
                }
                s.read += chunk.len() as u64;
                Some((Ok(chunk), s))
            }
            Some(Err(e)) => {
                s.done = true;
                let err = io_err(&s.path, e);
                Some((Err(err), s))
            }
            None => {
                s.done = true;
                if s.read != s.len {
                    let err = RegistryError::Invalid {
                        location: s.path.display().to_string(),
                        message: format!("expected {} bytes, read {}", s.len, s.read),
                    };
                    return Some((Err(err), s));
                }
                if let (Some(h), Some((expected, what))) = (s.hasher.take(), s.verify.take()) {
                    let actual = h.finish();
                    if actual != expected {
                        let err = RegistryError::Oci(crate::oci::OciError::DigestMismatch {
                            what,
                            expected,
                            actual,
                        });
                        return Some((Err(err), s));
                    }
                }
                None
            }
        }
    })
    .boxed()
}

#[async_trait]
impl Repository for LayoutRepository {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        Ok(self.read_manifest(reference)?.descriptor())
    }

    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        self.read_manifest(reference)
    }

    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        let what = format!(
            "manifest {} for {}",
            tag.map(str::to_string)
                .unwrap_or_else(|| manifest.digest.to_string()),
            self.location
        );
        if manifest.bytes.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge {
                what,
                size: manifest.bytes.len(),
            });
        }
        manifest.digest.verify(&what, &manifest.bytes)?;
        let summary = ManifestSummary::parse(&what, &manifest.bytes)?;
        if let Some(inner) = summary.media_type.as_deref() {
            if inner != manifest.media_type {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!(
                        "{what}: its mediaType is {inner:?} but it is being stored as {:?}",
                        manifest.media_type
                    ),
                });
            }
        }
        if let Some(tag) = tag {
            if !super::reference::is_valid_tag(tag) {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!("{tag:?} is not a valid tag"),
                });
            }
        }
        // Like a registry, refuse a manifest whose content is missing: children and
        // blobs go first. Foreign (non-distributable) layers are never stored locally.
        for desc in summary
            .config
            .iter()
            .chain(&summary.layers)
            .chain(&summary.manifests)
        {
            if desc.media_type.contains("nondistributable") || desc.media_type.contains("foreign") {
                continue;
            }
            let d: Sha256Digest = desc.digest.parse()?;
            if !self.blob_present(&d) {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!(
                        "{what} names {} {d}, which is not in the layout (push it first)",
                        desc.media_type
                    ),
                });
            }
        }
        self.write_blob_bytes(&manifest.digest, &manifest.bytes)?;

        let _guard = self.index_lock.lock().await;
        let mut index = self.read_index()?;
        let entries = index["manifests"].as_array_mut().expect("checked on read");
        let descriptor = |annotations: Option<Value>| {
            let mut e = Map::new();
            e.insert("mediaType".into(), json!(manifest.media_type));
            e.insert("digest".into(), json!(manifest.digest.to_string()));
            e.insert("size".into(), json!(manifest.bytes.len()));
            if let Some(at) = summary.artifact_type.as_deref() {
                e.insert("artifactType".into(), json!(at));
            }
            if let Some(a) = annotations {
                e.insert("annotations".into(), a);
            }
            Value::Object(e)
        };
        match tag {
            Some(tag) => {
                entries.retain(|e| entry_tag(e) != Some(tag));
                entries.push(descriptor(Some(json!({ annotation::REF_NAME: tag }))));
            }
            None if summary.subject.is_some() => {
                // Keep referrers reachable: an untagged entry, once.
                let already = entries
                    .iter()
                    .any(|e| entry_digest(e).as_ref() == Some(&manifest.digest));
                if !already {
                    entries.push(descriptor(None));
                }
            }
            None => return Ok(()),
        }
        self.write_index(&index)
    }

    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        let _guard = self.index_lock.lock().await;
        let mut index = self.read_index()?;
        let entries = index["manifests"].as_array_mut().expect("checked on read");
        let before = entries.len();
        entries.retain(|e| entry_digest(e).as_ref() != Some(digest));
        let removed_entries = entries.len() != before;
        let path = self.blob_path(digest);
        let had_blob = path.is_file();
        if !removed_entries && !had_blob {
            return Err(self.not_found(format!("manifest {digest}")));
        }
        if had_blob {
            // Refuse to delete a blob that is not a manifest (a layer shared by digest).
            let is_manifest = std::fs::metadata(&path)
                .map(|m| m.len() <= MAX_MANIFEST_SIZE as u64)
                .unwrap_or(false)
                && std::fs::read(&path)
                    .ok()
                    .and_then(|b| ManifestSummary::parse("", &b).ok())
                    .is_some_and(|s| {
                        s.media_type.is_some() || s.config.is_some() || !s.manifests.is_empty()
                    });
            if !is_manifest {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!("{digest} is not a manifest; refusing to delete it"),
                });
            }
        }
        if removed_entries {
            self.write_index(&index)?;
        }
        if had_blob {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }

    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        let path = self.blob_path(digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(format!("blob {digest}")))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        let size = file.metadata().await.map_err(|e| io_err(&path, e))?.len();
        match range {
            None => Ok(file_stream(
                file,
                size,
                Some((
                    digest.clone(),
                    format!("blob {digest} in {}", self.location),
                )),
                path,
            )),
            Some(r) => {
                if r.start > r.end || r.end > size {
                    return Err(RegistryError::Invalid {
                        location: self.location.clone(),
                        message: format!(
                            "range {}..{} is outside blob {digest} ({size} bytes)",
                            r.start, r.end
                        ),
                    });
                }
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| io_err(&path, e))?;
                Ok(file_stream(file, r.end - r.start, None, path))
            }
        }
    }

    async fn push_blob(
        &self,
        digest: &Sha256Digest,
        size: u64,
        mut data: BlobStream,
    ) -> Result<()> {
        if self.blob_size(digest).await? == Some(size) {
            return Ok(());
        }
        let dir = self.root.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(&dir, e))?;
        let tmp = crate::files::temp_file_in(&dir, "").map_err(|e| io_err(&dir, e))?;
        let std_file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| io_err(tmp.path(), e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = DigestWriter::new();
        let mut written = 0u64;
        while let Some(chunk) = data.try_next().await? {
            written += chunk.len() as u64;
            if written > size {
                return Err(RegistryError::Invalid {
                    location: self.location.clone(),
                    message: format!("blob {digest}: more than the announced {size} bytes"),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err(tmp.path(), e))?;
        }
        file.flush().await.map_err(|e| io_err(tmp.path(), e))?;
        file.sync_all().await.map_err(|e| io_err(tmp.path(), e))?;
        drop(file);
        if written != size {
            return Err(RegistryError::Invalid {
                location: self.location.clone(),
                message: format!("blob {digest}: announced {size} bytes, received {written}"),
            });
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(RegistryError::Oci(crate::oci::OciError::DigestMismatch {
                what: format!("blob pushed to {}", self.location),
                expected: digest.clone(),
                actual,
            }));
        }
        let target = self.blob_path(digest);
        tmp.persist(&target).map_err(|e| io_err(&target, e.error))?;
        self.new_blobs.lock().unwrap().push(digest.clone());
        Ok(())
    }

    /// Removes the blobs this value wrote that nothing in `index.json` reaches (a
    /// failed run's leftovers), then, when the layout is one this value created and no
    /// entry is left, the layout itself. Only what this run made goes, and nothing
    /// another writer could be relying on: a blob is kept once anything reaches it, and
    /// directories are removed only when empty.
    async fn discard(&self) -> Result<()> {
        let _guard = self.index_lock.lock().await;
        let new = std::mem::take(&mut *self.new_blobs.lock().unwrap());
        if !new.is_empty() {
            let referenced = self.referenced_blobs()?;
            for digest in new.iter().filter(|d| !referenced.contains(*d)) {
                let path = self.blob_path(digest);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_err(&path, e))
                    }
                    _ => {}
                }
            }
        }
        let Some(created_dir) = self.created else {
            return Ok(());
        };
        if !self.entries()?.is_empty() {
            return Ok(());
        }
        // What open_or_create wrote, innermost first; a directory someone else put a
        // file in stays (remove_dir refuses a non-empty one).
        let blobs = self.root.join("blobs");
        let _ = std::fs::remove_dir(blobs.join("sha256"));
        let _ = std::fs::remove_dir(&blobs);
        if !blobs.exists() {
            let _ = std::fs::remove_file(self.root.join("oci-layout"));
            let _ = std::fs::remove_file(self.index_path());
            if created_dir {
                let _ = std::fs::remove_dir(&self.root);
            }
        }
        Ok(())
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        let tags: BTreeSet<String> = self
            .entries()?
            .iter()
            .filter_map(|e| entry_tag(e).map(str::to_string))
            .collect();
        Ok(tags.into_iter().collect())
    }

    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        Ok(self
            .referrers_sync(std::slice::from_ref(digest), artifact_type)?
            .pop()
            .unwrap_or_default())
    }

    async fn referrers_of_each(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        self.referrers_sync(digests, artifact_type)
    }
}

/// An `oci-archive` tarball, worked on as a layout unpacked into a private temporary
/// directory.
///
/// Why unpack rather than index the tar in place: writes need a layout anyway, ranged
/// and repeated reads become plain file reads, and digests are verified the same way as
/// for a directory. The cost is disk space for one copy of the archive.
///
/// Writes change only the temporary layout; [`Repository::commit`] writes a new tarball
/// next to the archive and renames it over, so the archive is either the old one or the
/// complete new one, and is untouched when the work fails before `commit`.
#[derive(Debug)]
pub struct ArchiveRepository {
    archive: PathBuf,
    layout: LayoutRepository,
    dirty: AtomicBool,
    _dir: tempfile::TempDir,
}

impl ArchiveRepository {
    /// Opens an archive for reading (and writing). A missing file is an empty layout,
    /// written by the first `commit` after a change; `must_exist` refuses that.
    pub fn open(archive: impl Into<PathBuf>, must_exist: bool) -> Result<Self> {
        let archive = archive.into();
        // The unpacked copy lives in the system temp dir: only the finished tarball is
        // written next to the archive (and renamed over it).
        let dir = tempfile::Builder::new()
            .prefix("afterpush-archive-")
            .tempdir()
            .map_err(|e| io_err(&std::env::temp_dir(), e))?;
        let layout_dir = dir.path().join("layout");
        match std::fs::File::open(&archive) {
            Ok(f) => {
                unpack_layout(f, &archive, &layout_dir)?;
                let mut layout =
                    LayoutRepository::open(&layout_dir).map_err(|e| RegistryError::Invalid {
                        location: archive.display().to_string(),
                        message: format!("not an OCI image layout archive: {e}"),
                    })?;
                layout.location = format!("oci-archive:{}", archive.display());
                Ok(Self {
                    archive,
                    layout,
                    dirty: AtomicBool::new(false),
                    _dir: dir,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                let mut layout = LayoutRepository::open_or_create(&layout_dir)?;
                layout.location = format!("oci-archive:{}", archive.display());
                Ok(Self {
                    archive,
                    layout,
                    // A new archive is written on commit even when nothing was added.
                    dirty: AtomicBool::new(true),
                    _dir: dir,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NotFound {
                what: "archive".into(),
                location: archive.display().to_string(),
            }),
            Err(e) => Err(io_err(&archive, e)),
        }
    }

    /// The unpacked layout (for inspection in tests and tools).
    pub fn layout(&self) -> &LayoutRepository {
        &self.layout
    }

    /// The archive path.
    pub fn path(&self) -> &Path {
        &self.archive
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    fn write_archive(&self) -> Result<()> {
        let parent = self
            .archive
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = crate::files::temp_file_in(parent, ".tar").map_err(|e| io_err(parent, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| io_err(tmp.path(), e))?;
        let writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let writer = write_layout_tar(self.layout.root(), writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| io_err(tmp.path(), e.into_error()))?;
        file.sync_all().map_err(|e| io_err(tmp.path(), e))?;
        tmp.persist(&self.archive)
            .map_err(|e| io_err(&self.archive, e.error))?;
        Ok(())
    }
}

/// Paths allowed in a layout archive: the layout files and the blob tree.
fn is_layout_path(path: &Path) -> bool {
    let parts: Vec<_> = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    match parts.as_slice() {
        // `manifest.json` and `repositories` are the `docker load` records some
        // exporters add beside the layout; they are kept as they are.
        [f] => matches!(
            f.as_str(),
            "oci-layout" | "index.json" | "blobs" | "manifest.json" | "repositories"
        ),
        [b, alg] => b == "blobs" && alg == "sha256",
        [b, alg, hex] => {
            b == "blobs"
                && alg == "sha256"
                && hex.len() == 64
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }
        _ => false,
    }
}

/// Unpacks a layout tarball, accepting only regular files and directories at layout
/// paths (anything else, links included, is refused naming the entry).
fn unpack_layout(file: std::fs::File, archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| io_err(dest, e))?;
    let bad = |message: String| RegistryError::Invalid {
        location: archive.display().to_string(),
        message,
    };
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let entries = tar.entries().map_err(|e| io_err(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if !is_layout_path(&path) {
            return Err(bad(format!(
                "unexpected entry {} (an OCI layout holds oci-layout, index.json and blobs/sha256/<hex>)",
                path.display()
            )));
        }
        if kind.is_dir() {
            let d = dest.join(&path);
            std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        } else if kind.is_file() {
            let target = dest.join(&path);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
            }
            let mut out = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| bad(format!("entry {}: {e}", path.display())))?;
        } else {
            return Err(bad(format!(
                "entry {} is a {kind:?}, not a file or directory",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes a layout directory as a deterministic tar, in the shape containerd's archive
/// exporter (used by `docker buildx build -o type=oci`) gives it: entries sorted by name
/// (so `blobs/` and `blobs/sha256/` come before their files), directories 0755, blobs
/// and `oci-layout` 0444, `index.json` 0644, uid/gid 0, no user names, mtime 0. The same
/// layout always gives the same bytes.
pub fn write_layout_tar<W: Write>(root: &Path, writer: W) -> Result<W> {
    let mut names: Vec<String> = Vec::new();
    for top in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        if root.join(top).is_file() {
            names.push(top.to_string());
        }
    }
    let blob_dir = root.join("blobs").join("sha256");
    let mut blobs = Vec::new();
    if blob_dir.is_dir() {
        for e in std::fs::read_dir(&blob_dir).map_err(|e| io_err(&blob_dir, e))? {
            let e = e.map_err(|e| io_err(&blob_dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            // Skip temporaries of interrupted writes.
            if name.starts_with('.') {
                continue;
            }
            blobs.push(format!("blobs/sha256/{name}"));
        }
    }
    names.extend(blobs);
    names.push("blobs/".into());
    names.push("blobs/sha256/".into());
    names.sort();

    let mut builder = tar::Builder::new(writer);
    for name in &names {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, name, std::io::empty())
                .map_err(|e| io_err(root, e))?;
        } else {
            let path = root.join(name);
            let mut f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
            header.set_entry_type(tar::EntryType::Regular);
            // As containerd's archive exporter (BuildKit's `type=oci`) writes them:
            // content-addressed files read-only, index.json writable.
            let read_only = name.starts_with("blobs/") || name == "oci-layout";
            header.set_mode(if read_only { 0o444 } else { 0o644 });
            header.set_size(len);
            let reader: &mut dyn Read = &mut f;
            builder
                .append_data(&mut header, name, reader.take(len))
                .map_err(|e| io_err(&path, e))?;
        }
    }
    builder.into_inner().map_err(|e| io_err(root, e))
}

#[async_trait]
impl Repository for ArchiveRepository {
    fn location(&self) -> String {
        self.layout.location()
    }
    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        self.layout.resolve(reference).await
    }
    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        self.layout.get_manifest(reference).await
    }
    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        self.mark_dirty();
        self.layout.put_manifest(manifest, tag).await
    }
    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        self.mark_dirty();
        self.layout.delete_manifest(digest).await
    }
    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        self.layout.blob_size(digest).await
    }
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        self.layout.get_blob(digest, range).await
    }
    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()> {
        self.mark_dirty();
        self.layout.push_blob(digest, size, data).await
    }
    async fn list_tags(&self) -> Result<Vec<String>> {
        self.layout.list_tags().await
    }
    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        self.layout.referrers(digest, artifact_type).await
    }
    async fn referrers_of_each(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        self.layout.referrers_of_each(digests, artifact_type).await
    }
    async fn commit(&self) -> Result<()> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.layout.index_lock.lock().await;
        // Synchronous file I/O: an archive is written once, at the end of the work.
        self.write_archive()?;
        self.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_are_checked() {
        for ok in [
            "oci-layout",
            "./index.json",
            "blobs",
            "blobs/sha256",
            "blobs/sha256/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ] {
            assert!(is_layout_path(Path::new(ok)), "{ok}");
        }
        for bad in [
            "../index.json",
            "etc/passwd",
            "blobs/sha256/xyz",
            "blobs/sha512/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "/index.json",
        ] {
            assert!(!is_layout_path(Path::new(bad)), "{bad}");
        }
    }

    /// A small image manifest with distinct bytes per `n` (its config is `{}`).
    fn tiny_manifest(n: u8) -> Manifest {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[],"annotations":{{"n":"{n}"}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Sha256Digest::of(b"{}")
        );
        Manifest::new(media::OCI_MANIFEST, bytes.into_bytes())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Whatever sequence of tag writes and deletes: every tag resolves to the last
        /// manifest put under it, deleted manifests lose their tags, and `index.json`
        /// stays a valid layout that reopens the same.
        #[test]
        fn tags_follow_the_last_write(ops in proptest::collection::vec((0u8..4, 0u8..5, proptest::bool::ANY), 1..25)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
            rt.block_on(async {
                crate::registry::push_bytes(&repo, Bytes::from_static(b"{}")).await.unwrap();
                let mut model: std::collections::BTreeMap<String, u8> = Default::default();
                for (tag, n, delete) in ops {
                    let tag = format!("t{tag}");
                    let m = tiny_manifest(n);
                    if delete {
                        let had = model.values().any(|v| *v == n) || repo.blob_present(&m.digest);
                        let result = repo.delete_manifest(&m.digest).await;
                        assert_eq!(result.is_ok(), had, "{result:?}");
                        model.retain(|_, v| *v != n);
                    } else {
                        repo.put_manifest(&m, Some(&tag)).await.unwrap();
                        model.insert(tag, n);
                    }
                }
                let reopened = LayoutRepository::open(repo.root()).unwrap();
                assert_eq!(reopened.list_tags().await.unwrap(), model.keys().cloned().collect::<Vec<_>>());
                for (tag, n) in &model {
                    assert_eq!(reopened.get_manifest(tag).await.unwrap(), tiny_manifest(*n));
                }
            });
        }
    }
}
