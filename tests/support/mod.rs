//! What the integration tests share: the real servers ([`servers`], re-exported here),
//! the proxies and relays in front of them, the `afterpush invoke` stack, SQS on moto
//! ([`sqs`]), and helpers for running the CLI and reading what it wrote.
#![allow(dead_code)]

pub mod bridge_relay;
pub mod ecr_mirror;
pub mod fault_proxy;
pub mod http_server;
pub mod invoke_stack;
pub mod moto_accounts;
pub mod moto_fault_proxy;
pub mod moto_setup;
pub mod peak_rss;
pub mod servers;
pub mod shared;
pub mod sqs;
pub mod token_server;
pub mod work_stack;

pub use moto_setup::*;
pub use servers::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic pseudo-random bytes (xorshift), so blobs are not trivially compressible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `command` and returns its stdout; fails the test with the command's stderr when
/// it cannot start or exits unsuccessfully.
pub fn stdout_of(command: &mut Command) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `skopeo` (the independent OCI client the tests read our output back with) with
/// `args`; returns its stdout, or fails the test with its stderr.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let bin = find_binary("skopeo", "sudo apt-get install -y skopeo");
    stdout_of(Command::new(bin).args(args))
}

impl TestMoto {
    /// The `afterpush` CLI, its AWS clients pointed at this moto (`aws_env`) and no
    /// `AWS_PROFILE` of the caller's in the way.
    pub fn afterpush_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_afterpush"));
        command
            .envs(Self::aws_env(&self.endpoint()))
            .env_remove("AWS_PROFILE");
        command
    }
}

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
