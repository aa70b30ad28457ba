//! What changes a layout, each with the index lock held by the caller: putting and
//! deleting manifests (index.json and their blobs), and discarding a failed run's writes.

use super::*;

impl LayoutRepository {
    /// [`Repository::put_manifest`], the caller holding the index lock.
    pub(super) fn put_manifest_locked(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
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
            if !crate::registry::reference::is_valid_tag(tag) {
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

    /// [`Repository::delete_manifest`], the caller holding the index lock.
    pub(super) fn delete_manifest_locked(&self, digest: &Sha256Digest) -> Result<()> {
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

    /// [`Repository::discard`], the caller holding the index lock.
    pub(super) fn discard_locked(&self) -> Result<()> {
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
}
