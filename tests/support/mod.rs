//! What the integration tests share: the real servers ([`servers`], re-exported here),
//! the proxies and relays in front of them, the `afterpush invoke` stack, and helpers
//! for running the CLI and reading what it wrote.
#![allow(dead_code)]

pub mod bridge_relay;
pub mod fault_proxy;
pub mod invoke_stack;
pub mod servers;
pub mod token_server;

pub use servers::*;

use std::path::{Path, PathBuf};

/// Runs `afterpush stitch …` (the args include the verb) without the stitcher's settings
/// the caller's environment may carry, so the CLI's own defaults apply; returns
/// (success, stdout, stderr).
pub fn afterpush_stitch_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .args(args)
        .env_remove("REQUIRED_PLATFORMS")
        .env_remove("STITCH_MODE")
        .env_remove("ARCH_TAG_TEMPLATE")
        .env_remove("TARGET_TAG_TEMPLATE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every regular file of a layer (decompressed when gzip), by name.
pub fn files_of_layer(blob: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let raw: Vec<u8> = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(blob), &mut out).unwrap();
        out
    } else {
        blob.to_vec()
    };
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(&raw[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let mut content = vec![];
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            files.insert(name, content);
        }
    }
    files
}

/// Runs the `afterpush` binary with `args` under the caller's environment without any
/// `AFTERPUSH_REGISTRY_*` variable or `RUST_LOG`, plus `env`, so each test says exactly
/// which registry and log settings apply; returns (exit status, stdout, stderr). A crash (a signal, as from a
/// stack overflow) has no exit code, unlike a clean failure (1).
pub fn afterpush_cli(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_afterpush"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AFTERPUSH_REGISTRY_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Wraps the manifest `inner` in `depth` OCI indexes, each listing only the one below,
/// stores them in `repo` (the outermost tagged `tag`) and returns the outermost. Such a
/// chain is legal OCI, and hostile: it is how walkers that recurse get a stack overflow.
pub async fn write_index_chain(
    repo: &dyn afterpush::registry::Repository,
    inner: &afterpush::registry::BlobRef,
    depth: usize,
    tag: &str,
) -> afterpush::registry::Manifest {
    use afterpush::oci::media;
    let mut below = inner.clone();
    let mut outer = None;
    for level in 1..=depth {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [{
                "mediaType": below.media_type,
                "digest": below.digest.to_string(),
                "size": below.size,
            }],
        });
        let manifest = afterpush::registry::Manifest::new(
            media::OCI_INDEX,
            serde_json::to_vec(&index).unwrap(),
        );
        repo.put_manifest(&manifest, (level == depth).then_some(tag))
            .await
            .unwrap();
        below = manifest.descriptor();
        outer = Some(manifest);
    }
    outer.expect("depth >= 1")
}

/// Every file under `dir`, by path, with its bytes.
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Puts a small OCI image manifest (config digest from `seed`, no layers) into ECR
/// `repository` under `tag`, and returns its digest (sha256 of the bytes, as real ECR
/// and the corrected moto compute it).
pub async fn put_seeded_manifest(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    seed: &str,
    tag: &str,
) -> afterpush::oci::Sha256Digest {
    use afterpush::oci::{media, Sha256Digest};
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":10}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        Sha256Digest::of(seed.as_bytes())
    );
    ecr.put_image()
        .repository_name(repository)
        .image_manifest(&body)
        .image_manifest_media_type(media::OCI_MANIFEST)
        .image_tag(tag)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PutImage {repository}:{tag}: {}",
                aws_sdk_ecr::error::DisplayErrorContext(e)
            )
        });
    Sha256Digest::of(body.as_bytes())
}

/// Creates ECR repository `name` (a test setup step; panics with the SDK's error).
pub async fn create_ecr_repository(ecr: &aws_sdk_ecr::Client, name: &str) {
    ecr.create_repository()
        .repository_name(name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateRepository {name}: {}",
                aws_sdk_ecr::error::DisplayErrorContext(e)
            )
        });
}
