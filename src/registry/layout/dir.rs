//! An OCI image layout directory holding one repository.
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

use super::{file_stream, io_err, MAX_INDEX_JSON_SIZE, OCI_LAYOUT_FILE_CONTENT};
use crate::oci::{annotation, media, DescriptorSummary, ManifestSummary, Sha256Digest};
use crate::registry::verified_stream::VerifiedStream;
use crate::registry::{
    BlobRef, BlobStream, Manifest, RegistryError, Repository, Result, MAX_MANIFEST_SIZE,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

mod writes;

fn index_too_large(path: &Path) -> RegistryError {
    RegistryError::Invalid {
        location: path.display().to_string(),
        message: format!(
            "over the {MAX_INDEX_JSON_SIZE}-byte limit of an image index (too many tags or referrers in one layout)"
        ),
    }
}

/// An OCI image layout directory holding one repository.
///
/// Its file I/O is synchronous and runs on tokio's blocking threads
/// ([`spawn_blocking`](tokio::task::spawn_blocking)), never on a runtime thread: the
/// async methods hand a clone (which shares the lock and the record of new blobs) to
/// one.
#[derive(Debug, Clone)]
pub struct LayoutRepository {
    root: PathBuf,
    /// What [`Repository::location`] says (`oci:DIR`, or `oci-archive:FILE` when this
    /// layout is the unpacked copy of an archive).
    pub(super) location: String,
    /// Serialises read-modify-write cycles of `index.json`.
    pub(super) index_lock: Arc<tokio::sync::Mutex<()>>,
    /// What [`Self::open_or_create`] made: `Some(true)` the directory, `Some(false)` the
    /// layout in a directory that was empty. [`Repository::discard`] undoes it.
    created: Option<bool>,
    /// Blobs (manifests included) this value wrote that were not there before.
    new_blobs: Arc<std::sync::Mutex<Vec<Sha256Digest>>>,
}

/// Runs the file I/O `work` on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::Io {
            path: "(layout file I/O task)".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// One `index.json` entry, kept as JSON so that fields we do not know survive a rewrite.
pub(super) fn entry_digest(entry: &Value) -> Option<Sha256Digest> {
    entry.get("digest")?.as_str()?.parse().ok()
}

pub(super) fn entry_tag(entry: &Value) -> Option<&str> {
    entry
        .get("annotations")?
        .get(annotation::REF_NAME)?
        .as_str()
}

pub(super) fn entry_media_type(entry: &Value) -> Option<&str> {
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
    if crate::registry::reference::is_valid_tag(reference) {
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
            index_lock: Default::default(),
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

    pub(super) fn entries(&self) -> Result<Vec<Value>> {
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
    pub(super) fn read_manifest_blob(
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

#[async_trait]
impl Repository for LayoutRepository {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        Ok(self.get_manifest(reference).await?.descriptor())
    }

    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        let (this, reference) = (self.clone(), reference.to_string());
        blocking(move || this.read_manifest(&reference)).await
    }

    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        let (this, manifest, tag) = (self.clone(), manifest.clone(), tag.map(str::to_string));
        let guard = self.index_lock.clone().lock_owned().await;
        blocking(move || {
            let _guard = guard;
            this.put_manifest_locked(&manifest, tag.as_deref())
        })
        .await
    }

    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        let (this, digest) = (self.clone(), digest.clone());
        let guard = self.index_lock.clone().lock_owned().await;
        blocking(move || {
            let _guard = guard;
            this.delete_manifest_locked(&digest)
        })
        .await
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

    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()> {
        if self.blob_size(digest).await? == Some(size) {
            return Ok(());
        }
        let dir = self.root.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(&dir, e))?;
        let tmp =
            blocking(move || crate::files::temp_file_in(&dir, "").map_err(|e| io_err(&dir, e)))
                .await?;
        let std_file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| io_err(tmp.path(), e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        // Size and digest are checked as the bytes come: nothing wrong is renamed into place.
        let mut data =
            VerifiedStream::new(data, format!("blob {digest} pushed to {}", self.location))
                .sized(size)
                .digest(digest.clone());
        while let Some(chunk) = data.try_next().await? {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err(tmp.path(), e))?;
        }
        file.flush().await.map_err(|e| io_err(tmp.path(), e))?;
        file.sync_all().await.map_err(|e| io_err(tmp.path(), e))?;
        drop(file);
        let target = self.blob_path(digest);
        let (new_blobs, digest) = (self.new_blobs.clone(), digest.clone());
        // The rename and its record happen together on the blocking thread, under the
        // index lock that discard takes too: a push whose future is dropped while the
        // rename runs (a copy failing on another blob) is recorded before discard looks,
        // so discard removes it instead of leaving it behind.
        let guard = self.index_lock.clone().lock_owned().await;
        blocking(move || {
            let _guard = guard;
            tmp.persist(&target).map_err(|e| io_err(&target, e.error))?;
            new_blobs.lock().unwrap().push(digest);
            Ok(())
        })
        .await
    }

    /// Removes the blobs this value wrote that nothing in `index.json` reaches (a
    /// failed run's leftovers), then, when the layout is one this value created and no
    /// entry is left, the layout itself. Only what this run made goes, and nothing
    /// another writer could be relying on: a blob is kept once anything reaches it, and
    /// directories are removed only when empty.
    async fn discard(&self) -> Result<()> {
        let this = self.clone();
        let guard = self.index_lock.clone().lock_owned().await;
        blocking(move || {
            let _guard = guard;
            this.discard_locked()
        })
        .await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        let this = self.clone();
        blocking(move || this.list_tags_sync()).await
    }

    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        Ok(self
            .referrers_of_each(std::slice::from_ref(digest), artifact_type)
            .await?
            .pop()
            .unwrap_or_default())
    }

    async fn referrers_of_each(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        let (this, digests) = (self.clone(), digests.to_vec());
        let artifact_type = artifact_type.map(str::to_string);
        blocking(move || this.referrers_sync(&digests, artifact_type.as_deref())).await
    }
}

impl LayoutRepository {
    fn list_tags_sync(&self) -> Result<Vec<String>> {
        let tags: BTreeSet<String> = self
            .entries()?
            .iter()
            .filter_map(|e| entry_tag(e).map(str::to_string))
            .collect();
        Ok(tags.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
