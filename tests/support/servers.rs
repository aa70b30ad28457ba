//! Real servers for the integration tests: Debian's `docker-registry` (distribution
//! 2.8) and `moto_server` (AWS APIs), each on 127.0.0.1 with a free port and temporary
//! state, stopped when dropped. A missing binary fails the test with the exact command
//! that installs it: nothing passes silently.
//!
//! A file of its own so that the functions' Runtime API tests (`functions/*/tests`) can
//! use the servers through `#[path]` without the rest of `support`, which needs the
//! `afterpush` binary of the root package.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root, also when this file is compiled into a function package's test
/// (whose manifest directory is `functions/<name>`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("tests/support/moto_launcher.py").is_file())
        .unwrap_or(manifest)
        .to_path_buf()
}

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

/// The path of `name` on PATH (or /usr/bin, /usr/sbin); fails the test with the command
/// that installs it.
pub fn find_binary(name: &str, install: &str) -> PathBuf {
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

/// Debian's `docker-registry` serving on 127.0.0.1 with filesystem storage in a temp
/// dir and deletes enabled.
pub struct TestRegistry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts a registry with `configure` applied to its command first (see
    /// `support::shared`, which has the server die with the test process).
    pub fn start_with(configure: fn(&mut Command)) -> Self {
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
        let mut command = Command::new(bin);
        configure(&mut command);
        let child = command
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

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
    let venv = workspace_root().join(".venv/bin/python");
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
        Self::start_with(|_| {})
    }

    /// Starts moto with `configure` applied to its command first (see
    /// `support::shared`, which has the server die with the test process).
    pub fn start_with(configure: fn(&mut Command)) -> Self {
        let python = moto_python();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let launcher = workspace_root().join("tests/support/moto_launcher.py");
        let mut command = Command::new(&python);
        configure(&mut command);
        let child = command
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

    /// The server's process id and its temporary directory.
    pub fn pid_and_dir(&self) -> (u32, &Path) {
        (self.child.id(), self._dir.path())
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
