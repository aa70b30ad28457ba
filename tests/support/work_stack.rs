//! The stack the reconcile end-to-end test (tests/it/reconcile_e2e.rs) runs against:
//! its own registry (behind a fault proxy, the functions' only way to it) and its own
//! moto (ECR, S3, SQS) with the work queues as the template makes them
//! (`IndexerWork.fifo`, `StitcherWork.fifo`, each sending a message to the FIFO
//! dead-letter queue on its third receive) and a report bucket; the functions run
//! through `afterpush invoke`, and the queues are driven as Lambda's event source
//! mapping drives them ([`WorkStack::drive`]).

use super::ecr_mirror::mirror_repository;
use super::fault_proxy::FaultProxy;
use super::sqs;
use super::{TestMoto, TestRegistry};
use afterpush::oci::Sha256Digest;
use afterpush::reconcile::{push_event, EventOrigin};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings, RetryPolicy};
use afterpush::registry::Repository;
use aws_sdk_sqs::types::Message;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The account and region of moto's resources and of the events.
pub use sqs::{ACCOUNT, REGION};
/// The reconciler's report bucket.
pub const BUCKET: &str = "reconciler-reports";

/// A registry client for `repository` on `host`, retrying fast.
pub fn connect(host: &str, repository: &str) -> DistributionRepository {
    let settings = RegistrySettings {
        retry: RetryPolicy::fast(),
        ..RegistrySettings::default()
    };
    DistributionRepository::connect(&settings, host, repository).unwrap()
}

/// The servers, queues and clients of one test.
pub struct WorkStack {
    pub registry: TestRegistry,
    pub moto: TestMoto,
    /// In front of the registry: the functions' only way to it, counting their writes.
    pub proxy: FaultProxy,
    pub sqs: aws_sdk_sqs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub s3: aws_sdk_s3::Client,
    pub indexer_queue: String,
    pub stitcher_queue: String,
    pub dead_letters: String,
    /// The repositories [`WorkStack::mirror`] mirrors.
    repositories: Vec<String>,
    /// The functions' settings (`SPAN_SIZE`, `REPOSITORY_TAG_FILTERS`, ...).
    settings: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
}

impl WorkStack {
    /// Starts the servers and creates the queues and the bucket; the functions will run
    /// with `settings`, and [`Self::mirror`] mirrors `repositories`.
    pub async fn start(repositories: &[&str], settings: &[(&'static str, &str)]) -> Self {
        let registry = TestRegistry::start();
        let moto = TestMoto::start();
        let proxy = FaultProxy::start(registry.port);
        let config = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let ([indexer_queue, stitcher_queue], dead_letters) = sqs::create_fifo_with_dead_letters(
            &sqs,
            ["IndexerWork.fifo", "StitcherWork.fifo"],
            "WorkDeadLetters.fifo",
        )
        .await;
        let s3 = moto.s3().await;
        super::create_s3_bucket(&s3, BUCKET).await;
        WorkStack {
            repositories: repositories.iter().map(|r| r.to_string()).collect(),
            settings: settings.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ecr: moto.ecr().await,
            registry,
            moto,
            proxy,
            sqs,
            s3,
            indexer_queue,
            stitcher_queue,
            dead_letters,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A client for registry repository `name`, straight to the registry (the test's
    /// own reads and writes, which the proxy does not count).
    pub fn repo(&self, name: &str) -> DistributionRepository {
        connect(&self.registry.host(), name)
    }

    /// Mirrors the stack's repositories from the registry into moto's ECR.
    pub async fn mirror(&self) {
        for name in &self.repositories {
            mirror_repository(&self.repo(name), &self.ecr, name).await;
        }
    }

    /// The functions' environment: the registry through the proxy, moto for AWS, the
    /// settings, the queues and the report bucket.
    pub fn function_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "AFTERPUSH_REGISTRY_ENDPOINT",
                format!("http://{}", self.proxy.host()),
            ),
            ("AFTERPUSH_REGISTRY_AUTH", "anonymous".into()),
            // A refused upload fails its record at once rather than after backing off.
            ("AFTERPUSH_REGISTRY_MAX_ATTEMPTS", "1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("REPORT_BUCKET", BUCKET.into()),
            ("INDEXER_QUEUE_URL", self.indexer_queue.clone()),
            ("STITCHER_QUEUE_URL", self.stitcher_queue.clone()),
            ("DEAD_LETTER_QUEUE_URL", self.dead_letters.clone()),
        ];
        env.extend(self.settings.iter().cloned());
        env.extend(TestMoto::aws_env(&self.moto.endpoint()));
        env
    }

    /// Runs `afterpush ARGS` with exactly [`Self::function_env`] plus `extra` (nothing of
    /// the caller's AWS or registry settings leaks in); returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str], extra: &[(&str, &str)]) -> (bool, String, String) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_afterpush"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.function_env())
            .envs(extra.iter().copied())
            .args(args);
        let out = command.output().expect("run afterpush");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `afterpush invoke FUNCTION --event <file holding event>`: its JSON answer.
    pub fn invoke(&self, function: &str, event: &Value, extra: &[(&str, &str)]) -> Value {
        let file = self.write_event(event);
        let args = ["invoke", function, "--event", file.to_str().unwrap()];
        let (ok, stdout, stderr) = self.cli(&args, extra);
        assert!(
            ok,
            "afterpush invoke {function} failed:\n{stderr}\n{stdout}"
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn write_event(&self, event: &Value) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("event-{}.json", file_stem_of(event)));
        std::fs::write(&path, serde_json::to_vec_pretty(event).unwrap()).unwrap();
        path
    }

    /// The reconciler on its schedule in `mode`; the run's id is `run`.
    pub fn reconcile(&self, mode: &str, run: &str) -> Value {
        let event = json!({
            "version": "0",
            "id": run,
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT,
            "time": "2026-12-07T03:00:00Z",
            "region": REGION,
            "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/afterpush-ReconcileSchedule")],
            "detail": {},
        });
        self.invoke("reconciler", &event, &[("RECONCILE_MODE", mode)])
    }

    /// The report the run stored in the bucket, at the place its output names.
    pub async fn stored_report(&self, output: &Value) -> Value {
        let location = output["report_location"]
            .as_str()
            .expect("a report location");
        let key = location
            .strip_prefix(&format!("s3://{BUCKET}/"))
            .unwrap_or_else(|| panic!("{location}"));
        let object = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {location}: {e:?}"));
        let bytes = object.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The reconciler's cursor in the report bucket.
    pub async fn cursor(&self) -> Value {
        let object = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key("reconciler/cursor.json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject reconciler/cursor.json: {e:?}"));
        let bytes = object.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// (visible, in flight) messages of `url`.
    pub async fn counts(&self, url: &str) -> (u64, u64) {
        sqs::counts(&self.sqs, url).await
    }

    /// One ReceiveMessage of up to ten messages, hidden for `visibility` seconds.
    pub async fn receive(&self, url: &str, visibility: i32) -> Vec<Message> {
        sqs::receive(&self.sqs, url, visibility).await
    }

    /// Drives `url` once as Lambda's event source mapping does: receives batches until
    /// the queue gives none, hands each to `function` as Lambda's SQS event, and deletes
    /// the messages its `batchItemFailures` does not name. The failed ones stay in
    /// flight until the drive ends; then they are made visible again (the visibility
    /// timeout running out, without the wait). Every receive counts towards the
    /// queue's maxReceiveCount, so the test looks at messages only through drives.
    pub async fn drive(&self, url: &str, function: &str, queue_name: &str) -> Drive {
        let mut drive = Drive::default();
        let mut failed_receipts = vec![];
        loop {
            let batch = self.receive(url, 300).await;
            if batch.is_empty() {
                break;
            }
            for m in &batch {
                check_addressing(m, function);
            }
            let answer = self.invoke(function, &sqs::lambda_event(&batch, queue_name), &[]);
            let failures = sqs::batch_item_failures(&answer);
            drive
                .outcomes
                .extend(answer["records"].as_array().cloned().unwrap_or_default());
            let left = sqs::delete_handled(&self.sqs, url, &batch, &failures).await;
            for m in &batch {
                if left.iter().any(|l| l.message_id() == m.message_id()) {
                    failed_receipts.push(m.receipt_handle().unwrap().to_string());
                    drive.failed.push(label(m));
                } else {
                    drive.handled.push(label(m));
                }
            }
        }
        for receipt in failed_receipts {
            self.sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        }
        drive.handled.sort();
        drive.failed.sort();
        drive
    }

    /// ECR's push event for `repository:tag` as it now is in the registry: what the
    /// stitcher's push of a stitched index raises in AWS, for the indexer.
    pub async fn push_event_of(&self, repository: &str, tag: &str) -> Value {
        let manifest = self.repo(repository).get_manifest(tag).await.unwrap();
        let origin = EventOrigin {
            account: Some(ACCOUNT.into()),
            region: Some(REGION.into()),
        };
        serde_json::to_value(push_event(repository, tag, &manifest, &origin).unwrap()).unwrap()
    }

    /// How many times `path_end` (e.g. `/alpha/manifests/2.0-soci`) was written
    /// successfully through the proxy.
    pub fn written(&self, path_end: &str) -> usize {
        self.proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.fault.is_none() && s.path.ends_with(path_end))
            .count()
    }
}

/// `repository:tag` of the push event a message carries.
pub fn label(m: &Message) -> String {
    let body: Value = serde_json::from_str(m.body().unwrap()).unwrap();
    format!(
        "{}:{}",
        body["detail"]["repository-name"].as_str().unwrap(),
        body["detail"]["image-tag"].as_str().unwrap()
    )
}

/// A work message names its target (the function whose queue holds it) and its
/// repository as its FIFO group.
fn check_addressing(m: &Message, function: &str) {
    let target = match function {
        "soci-indexer" => "indexer",
        _ => "stitcher",
    };
    assert_eq!(sqs::target_attribute(m), Some(target), "{m:?}");
    let label = label(m);
    assert_eq!(Some(sqs::group(m)), label.split(':').next(), "{m:?}");
}

/// What one drive of a queue did.
#[derive(Debug, Default)]
pub struct Drive {
    /// `repository:tag` of each message handled and deleted, sorted.
    pub handled: Vec<String>,
    /// `repository:tag` of each message named in `batchItemFailures`, sorted.
    pub failed: Vec<String>,
    /// Every record outcome the function reported.
    pub outcomes: Vec<Value>,
}

/// A file name part unique to the event: a prefix of the hash of its JSON.
fn file_stem_of(event: &Value) -> String {
    let text = event.to_string();
    Sha256Digest::of(text.as_bytes()).to_string()[7..23].to_string()
}
