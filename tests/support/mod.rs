//! Real servers for the integration tests: Debian's `docker-registry` (distribution
//! 2.8) and `moto_server` (AWS APIs), each on 127.0.0.1 with a free port and temporary
//! state, stopped when dropped. A missing binary fails the test with the exact command
//! that installs it: nothing passes silently.
#![allow(dead_code)]

pub mod bridge_relay;
pub mod fault_proxy;
pub mod http_server;
pub mod invoke_stack;
pub mod moto_setup;
pub mod peak_rss;
pub mod token_server;

pub use moto_setup::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; the server binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_serving(name: &str, port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited early ({status}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{name} did not listen on 127.0.0.1:{port} within 30 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn find_binary(name: &str, install: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; install it with: {install}");
}

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

/// Debian's `docker-registry` serving on 127.0.0.1 with filesystem storage in a temp
/// dir and deletes enabled.
pub struct TestRegistry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> Self {
        let bin = find_binary("docker-registry", "sudo apt-get install -y docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("spawn docker-registry");
        let mut reg = TestRegistry { child, port, dir };
        let log = reg.dir.path().join("registry.err");
        wait_until_serving("docker-registry", port, &mut reg.child, &log);
        reg
    }

    /// `127.0.0.1:PORT`, the registry host in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("docker://{}/{}", self.host(), repo_and_tag)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that has `moto[server]`: `$AFTERPUSH_PYTHON`, else the repository's
/// `.venv` (which `scripts/test` creates).
pub fn moto_python() -> PathBuf {
    if let Ok(p) = std::env::var("AFTERPUSH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "no Python with moto[server]: run `python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5'` \
         in the repository root, or set AFTERPUSH_PYTHON (scripts/test does this for you)"
    );
}

/// `moto_server` on 127.0.0.1, launched through `tests/support/moto_launcher.py`, which
/// corrects moto where it differs from AWS in what the tests rely on (ECR image digests,
/// ECS task containers, Lambda versions; see the launcher).
pub struct TestMoto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TestMoto {
    pub fn start() -> Self {
        let python = moto_python();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_launcher.py");
        let child = Command::new(&python)
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Lambda resolves image URIs against moto's ECR (a missing image is an
            // error, `ResolvedImageUri` carries the real digest), as real Lambda does.
            .env("MOTO_LAMBDA_STUB_ECR", "false")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        let mut moto = TestMoto {
            child,
            port,
            _dir: dir,
        };
        wait_until_serving("moto_server", port, &mut moto.child, &log);
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points a process's AWS SDK clients at `endpoint` (this moto,
    /// or a relay to it) with the test credentials.
    pub fn aws_env(endpoint: &str) -> [(&'static str, String); 4] {
        [
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// The `afterpush` CLI, its AWS clients pointed at this moto (`aws_env`) and no
    /// `AWS_PROFILE` of the caller's in the way.
    pub fn afterpush_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_afterpush"));
        command
            .envs(Self::aws_env(&self.endpoint()))
            .env_remove("AWS_PROFILE");
        command
    }

    /// An aws-config `SdkConfig` pointed at this moto, with static test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        Self::sdk_config_at(&self.endpoint()).await
    }

    /// The same config pointed at `endpoint` (a fault proxy in front of this moto).
    pub async fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "afterpush-tests",
            ))
            .load()
            .await
    }

    /// An S3 client for this moto (path-style addressing, which moto needs).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// An ECR client for this moto.
    pub async fn ecr(&self) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::new(&self.sdk_config().await)
    }

    /// Sets an image's `imagePushedAt` and `lastRecordedPullTime` (`None`: never pulled)
    /// through the launcher's test endpoint: moto stamps the PutImage second and records
    /// no pulls, where real ECR keeps both per image (see moto_launcher.py).
    pub async fn set_ecr_image_times(
        &self,
        repository: &str,
        digest: &str,
        pushed_at: chrono::DateTime<chrono::Utc>,
        last_pulled_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/afterpush/ecr-image-times",
                self.endpoint()
            ))
            .json(&serde_json::json!({
                "repositoryName": repository,
                "imageDigest": digest,
                "imagePushedAt": pushed_at.timestamp(),
                "lastRecordedPullTime": last_pulled_at.map(|t| t.timestamp()),
            }))
            .send()
            .await
            .expect("POST ecr-image-times");
        let status = response.status();
        assert!(
            status.is_success(),
            "setting the times of {repository}@{digest}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// An ECS client for this moto.
    pub async fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk_config().await)
    }

    /// A Lambda client for this moto.
    pub async fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk_config().await)
    }

    /// Creates IAM role `name` (moto's Lambda requires an existing role) and returns its
    /// ARN. One IAM query-API call by hand: the product has no use for an IAM client.
    pub async fn iam_role(&self, name: &str) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "CreateRole")
            .append_pair("Version", "2010-05-08")
            .append_pair("RoleName", name)
            .append_pair("AssumeRolePolicyDocument", "{}")
            .finish();
        let response = reqwest::Client::new()
            .post(self.endpoint())
            .header("Content-Type", "application/x-www-form-urlencoded")
            // moto routes by the credential scope's service; it checks no signature.
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body)
            .send()
            .await
            .expect("CreateRole");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "CreateRole {name}: {status} {text}");
        format!("arn:aws:iam::123456789012:role/{name}")
    }
}

impl Drop for TestMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
