//! Fan-out: the survey's work as messages for the functions' queues, instead of doing
//! it in-process ([`super::apply()`]).
//!
//! Each piece of [`Work`] becomes one [`OutgoingMessage`] for the function that does it
//! (the indexer for [`WorkKind::Index`], the stitcher for [`WorkKind::Stitch`]), whose
//! body is the work's synthetic push event, the one the function takes from EventBridge.
//! A stitch's follow-up indexing (`then`) is not sent: the stitcher's push of the index
//! raises a real ECR event, which starts the indexer as on any push.
//!
//! The group id is the repository, so one repository's work runs in order and never
//! twice at once. The deduplication id is a hash of the work (repository, tag, digest)
//! and of the settings that decide its output, so sending the same work again within
//! the FIFO queue's five-minute window is dropped, while a settings change (another
//! span size, say) makes new work that is not.

use super::{ReconcileSettings, Survey, Work, WorkKind};
use crate::oci::Sha256Digest;
use crate::queue::{send_all, OutgoingMessage, QueueError, SendReport, Target, WorkQueue};
use crate::queue::{MAX_ID_CHARS, SEND_BATCH};
use crate::soci::{IndexVersion, PlatformSelection, SociSettings, TagMode};
use crate::stitch::{StitchMode, StitchSettings};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Messages per [`send_all`] call when progress is reported (whole batches, so the
/// number of SendMessageBatch calls is the same as in one call).
const PROGRESS_CHUNK: usize = 10 * SEND_BATCH;

/// The function that does `kind` work.
pub fn target_of(kind: WorkKind) -> Target {
    match kind {
        WorkKind::Index => Target::Indexer,
        WorkKind::Stitch => Target::Stitcher,
    }
}

/// `MessageGroupId` of a repository's work: its name, or the sha256 hex of a name
/// longer than a group id may be.
pub fn group_id(repository: &str) -> String {
    if repository.len() <= MAX_ID_CHARS {
        repository.to_string()
    } else {
        Sha256Digest::of(repository.as_bytes()).hex()
    }
}

/// The settings that decide what `kind` work writes, in a stable text form: the
/// indexer's span size, minimum layer size, index version, tag mode and suffix and
/// platforms; the stitcher's templates, required platforms and mode.
pub fn settings_fingerprint(kind: WorkKind, settings: &ReconcileSettings) -> String {
    match kind {
        WorkKind::Index => index_fingerprint(&settings.soci),
        WorkKind::Stitch => stitch_fingerprint(&settings.stitch),
    }
}

fn index_fingerprint(s: &SociSettings) -> String {
    let version = match s.index_version {
        IndexVersion::V1 => "v1",
        IndexVersion::V2 => "v2",
    };
    let mode = match s.tag_mode {
        TagMode::Suffix => "suffix",
        TagMode::InPlace => "in-place",
        TagMode::None => "none",
    };
    let platforms = match &s.platforms {
        PlatformSelection::All => "all".to_string(),
        PlatformSelection::Only(list) => {
            let mut list = list.clone();
            list.sort();
            list.join(",")
        }
    };
    format!(
        "span-size={};min-layer-size={};index-version={version};tag-mode={mode};\
         tag-suffix={};platforms={platforms}",
        s.span_size, s.min_layer_size, s.tag_suffix
    )
}

fn stitch_fingerprint(s: &StitchSettings) -> String {
    let mut required: Vec<String> = s.required_platforms.iter().map(|p| p.to_string()).collect();
    required.sort();
    let mode = match s.mode {
        StitchMode::Complete => "complete",
        StitchMode::Partial => "partial",
    };
    format!(
        "arch-tag-template={};target-tag-template={};required-platforms={};mode={mode}",
        s.arch_tag_template.as_str(),
        s.target_tag_template.as_str(),
        required.join(",")
    )
}

/// `MessageDeduplicationId` of `work`: the sha256 hex of its kind, its
/// [`super::work_id`] and the [`settings_fingerprint`] of its kind.
pub fn dedup_id(work: &Work, settings: &ReconcileSettings) -> String {
    let kind = match work.kind {
        WorkKind::Index => "index",
        WorkKind::Stitch => "stitch",
    };
    let seed = format!(
        "{kind}\n{}\n{}",
        super::work_id(&work.repository, &work.tag, &work.digest),
        settings_fingerprint(work.kind, settings)
    );
    Sha256Digest::of(seed.as_bytes()).hex()
}

/// The message that has `work` done.
pub fn message_of(
    work: &Work,
    settings: &ReconcileSettings,
) -> Result<OutgoingMessage, EnqueueError> {
    let body = serde_json::to_string(&work.event).map_err(|source| EnqueueError::Body {
        what: format!("{}:{}@{}", work.repository, work.tag, work.digest),
        source,
    })?;
    Ok(OutgoingMessage {
        target: target_of(work.kind),
        body,
        dedup_id: dedup_id(work, settings),
        group_id: group_id(&work.repository),
    })
}

/// One repository's share of an [`EnqueueReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepositoryEnqueue {
    /// The repository.
    pub repository: String,
    /// Messages for the indexer.
    pub index: usize,
    /// Messages for the stitcher.
    pub stitch: usize,
    /// Indexing after a stitch, not sent (the stitcher's push starts it).
    pub after_stitch: usize,
    /// Messages not sent.
    pub failed: usize,
}

/// A message that was not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedWork {
    /// The repository.
    pub repository: String,
    /// The tag of the work.
    pub tag: String,
    /// The function it was for.
    pub target: Target,
    /// Why (the queue and what it answered).
    pub reason: String,
}

/// What [`enqueue`] sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnqueueReport {
    /// Per repository, in the order surveyed.
    pub repositories: Vec<RepositoryEnqueue>,
    /// Messages made.
    pub messages: usize,
    /// Messages the queues accepted, per target.
    pub sent: BTreeMap<Target, usize>,
    /// SendMessageBatch calls made.
    pub batch_calls: u64,
    /// Messages not sent, named.
    pub failed: Vec<FailedWork>,
}

impl EnqueueReport {
    /// Messages the queues accepted.
    pub fn total_sent(&self) -> usize {
        self.sent.values().sum()
    }
}

/// Why [`enqueue`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// A push event could not be written as JSON (names the image).
    #[error("the push event of {what} as a message body: {source}")]
    Body {
        /// The image.
        what: String,
        /// The serialiser's error.
        source: serde_json::Error,
    },
    /// A queue call failed; nothing more was sent after it.
    #[error("{error} ({} of {} messages sent before it)", report.total_sent(), report.messages)]
    Queue {
        /// The failed call.
        error: QueueError,
        /// What was sent before it.
        report: Box<EnqueueReport>,
    },
}

/// Sends the work of `surveys` to the functions' queues (see the module doc).
pub async fn enqueue(
    queue: &dyn WorkQueue,
    surveys: &[Survey],
    settings: &ReconcileSettings,
) -> Result<EnqueueReport, EnqueueError> {
    enqueue_with_progress(queue, surveys, settings, None).await
}

/// [`enqueue`], calling `progress` with the number of messages handed to the queues so
/// far after each chunk of sends.
pub async fn enqueue_with_progress(
    queue: &dyn WorkQueue,
    surveys: &[Survey],
    settings: &ReconcileSettings,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<EnqueueReport, EnqueueError> {
    let mut report = EnqueueReport::default();
    let mut messages = Vec::new();
    // Each message's repository and tag by deduplication id, to name the failures.
    let mut whose: HashMap<String, (usize, String)> = HashMap::new();
    for (r, survey) in surveys.iter().enumerate() {
        let mut mine = RepositoryEnqueue {
            repository: survey.repository.clone(),
            ..RepositoryEnqueue::default()
        };
        for work in &survey.work {
            match work.kind {
                WorkKind::Index => mine.index += 1,
                WorkKind::Stitch => mine.stitch += 1,
            }
            if work.then.is_some() {
                mine.after_stitch += 1;
            }
            let message = message_of(work, settings)?;
            whose.insert(message.dedup_id.clone(), (r, work.tag.clone()));
            messages.push(message);
        }
        report.repositories.push(mine);
    }
    report.messages = messages.len();

    let mut handed = 0;
    for target in Target::ALL {
        let for_target: Vec<OutgoingMessage> = messages
            .iter()
            .filter(|m| m.target == target)
            .cloned()
            .collect();
        let chunk = if progress.is_some() {
            PROGRESS_CHUNK
        } else {
            for_target.len().max(1)
        };
        for part in for_target.chunks(chunk) {
            let outcome = send_all(queue, part).await;
            let (sent, error) = match outcome {
                Ok(sent) => (sent, None),
                Err((error, sent)) => (sent, Some(error)),
            };
            merge(&mut report, sent, target, &whose);
            if let Some(error) = error {
                return Err(EnqueueError::Queue {
                    error,
                    report: Box::new(report),
                });
            }
            handed += part.len();
            if let Some(p) = progress {
                p(handed);
            }
        }
    }
    Ok(report)
}

fn merge(
    report: &mut EnqueueReport,
    sent: SendReport,
    target: Target,
    whose: &HashMap<String, (usize, String)>,
) {
    for (t, n) in sent.sent {
        *report.sent.entry(t).or_default() += n;
    }
    report.batch_calls += sent.batch_calls;
    for (dedup_id, reason) in sent.failed {
        let (repository, tag) = match whose.get(&dedup_id) {
            Some((r, tag)) => {
                report.repositories[*r].failed += 1;
                (report.repositories[*r].repository.clone(), tag.clone())
            }
            None => (String::new(), dedup_id),
        };
        report.failed.push(FailedWork {
            repository,
            tag,
            target,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Trigger;
    use crate::filters::RepositoryTagFilters;
    use crate::oci::media;
    use crate::queue::{EntryFailure, MemoryQueue};
    use crate::reconcile::{push_event, EventOrigin};
    use crate::registry::Manifest;

    fn manifest(seed: u32) -> Manifest {
        let config = Sha256Digest::of(format!("{{\"seed\":{seed}}}").as_bytes());
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":12}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG
        );
        Manifest::new(media::OCI_MANIFEST, bytes.into_bytes())
    }

    fn work(kind: WorkKind, repository: &str, tag: &str, seed: u32) -> Work {
        let manifest = manifest(seed);
        let origin = EventOrigin::of_host(Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        Work {
            kind,
            repository: repository.into(),
            tag: tag.into(),
            digest: manifest.digest.clone(),
            reason: "test".into(),
            layers: 0,
            bytes: 0,
            event: push_event(repository, tag, &manifest, &origin).unwrap(),
            then: None,
        }
    }

    fn settings() -> ReconcileSettings {
        ReconcileSettings::new(
            SociSettings::default(),
            StitchSettings::default(),
            RepositoryTagFilters::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_message_goes_to_the_function_and_its_body_is_the_push_event() {
        let settings = settings();
        for (kind, target) in [
            (WorkKind::Index, Target::Indexer),
            (WorkKind::Stitch, Target::Stitcher),
        ] {
            let w = work(kind, "team/app", "1.2-amd64", 1);
            let m = message_of(&w, &settings).unwrap();
            assert_eq!(m.target, target);
            assert_eq!(m.group_id, "team/app");
            assert_eq!(m.dedup_id.len(), 64);
            assert!(m.dedup_id.chars().all(|c| c.is_ascii_hexdigit()));
            let value: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            match Trigger::from_value(value).unwrap() {
                Trigger::EcrImageAction(event) => {
                    assert_eq!(event.detail, w.event.detail);
                    assert_eq!(event.id, w.event.id);
                    assert_eq!(event.account.as_deref(), Some("123456789012"));
                    assert_eq!(event.region.as_deref(), Some("eu-west-1"));
                }
                other => panic!("not a push event: {}", other.kind()),
            }
        }
    }

    #[test]
    fn a_long_repository_name_is_grouped_by_its_hash() {
        let long = format!("team/{}", "a".repeat(200));
        let group = group_id(&long);
        assert_eq!(group, Sha256Digest::of(long.as_bytes()).hex());
        assert_eq!(
            group_id(&"b".repeat(MAX_ID_CHARS)),
            "b".repeat(MAX_ID_CHARS)
        );
    }

    #[test]
    fn the_dedup_id_changes_with_the_work_and_the_settings_that_decide_it() {
        let base = settings();
        let index = work(WorkKind::Index, "app", "1", 1);
        let stitch = work(WorkKind::Stitch, "app", "1", 1);
        let id = |w: &Work, s: &ReconcileSettings| dedup_id(w, s);
        assert_eq!(id(&index, &base), id(&index, &settings()));
        assert_ne!(id(&index, &base), id(&stitch, &base));
        assert_ne!(
            id(&index, &base),
            id(&work(WorkKind::Index, "app", "2", 1), &base)
        );
        assert_ne!(
            id(&index, &base),
            id(&work(WorkKind::Index, "app", "1", 2), &base)
        );
        assert_ne!(
            id(&index, &base),
            id(&work(WorkKind::Index, "web", "1", 1), &base)
        );

        let soci_changes: [fn(&mut SociSettings); 6] = [
            |s| s.span_size *= 2,
            |s| s.min_layer_size += 1,
            |s| s.index_version = IndexVersion::V1,
            |s| s.tag_mode = TagMode::InPlace,
            |s| s.tag_suffix = "-lazy".into(),
            |s| s.platforms = PlatformSelection::Only(vec!["linux/arm64".into()]),
        ];
        for change in soci_changes {
            let mut changed = base.clone();
            change(&mut changed.soci);
            assert_ne!(
                id(&index, &base),
                id(&index, &changed),
                "{:?}",
                changed.soci
            );
            assert_eq!(
                id(&stitch, &base),
                id(&stitch, &changed),
                "{:?}",
                changed.soci
            );
        }
        // What does not change the index written makes no new work.
        let mut concurrency = base.clone();
        concurrency.soci.layer_concurrency += 3;
        assert_eq!(id(&index, &base), id(&index, &concurrency));

        let stitch_changes = [
            StitchSettings::from_lookup(|k| (k == "STITCH_MODE").then(|| "partial".into())),
            StitchSettings::from_lookup(|k| {
                (k == "REQUIRED_PLATFORMS").then(|| "linux/amd64".into())
            }),
            StitchSettings::from_lookup(|k| {
                (k == "ARCH_TAG_TEMPLATE").then(|| "{arch}-{tag}".into())
            }),
            StitchSettings::from_lookup(|k| {
                (k == "TARGET_TAG_TEMPLATE").then(|| "{tag}-multi".into())
            }),
        ];
        for changed_stitch in stitch_changes {
            let mut changed = base.clone();
            changed.stitch = changed_stitch.unwrap();
            assert_ne!(
                id(&stitch, &base),
                id(&stitch, &changed),
                "{:?}",
                changed.stitch
            );
            assert_eq!(
                id(&index, &base),
                id(&index, &changed),
                "{:?}",
                changed.stitch
            );
        }
        // The platforms' order is not a change.
        let mut a = base.clone();
        a.soci.platforms =
            PlatformSelection::Only(vec!["linux/amd64".into(), "linux/arm64".into()]);
        let mut b = base.clone();
        b.soci.platforms =
            PlatformSelection::Only(vec!["linux/arm64".into(), "linux/amd64".into()]);
        assert_eq!(id(&index, &a), id(&index, &b));
    }

    fn surveys() -> Vec<Survey> {
        let mut app = Survey {
            repository: "app".into(),
            ..Survey::default()
        };
        for n in 0..23 {
            app.work
                .push(work(WorkKind::Index, "app", &n.to_string(), n));
        }
        let mut stitch = work(WorkKind::Stitch, "app", "nine-amd64", 100);
        stitch.then = Some(Box::new(work(WorkKind::Index, "app", "nine", 101)));
        app.work.insert(0, stitch);
        let mut web = Survey {
            repository: "web".into(),
            ..Survey::default()
        };
        web.work.push(work(WorkKind::Index, "web", "1", 1));
        vec![app, web]
    }

    #[tokio::test]
    async fn the_work_is_sent_in_full_batches_and_a_second_send_is_deduplicated() {
        let queue = MemoryQueue::new();
        let settings = settings();
        let report = enqueue(&queue, &surveys(), &settings).await.unwrap();
        assert_eq!(report.messages, 25);
        assert_eq!(report.total_sent(), 25);
        assert_eq!(report.sent.get(&Target::Indexer), Some(&24));
        assert_eq!(report.sent.get(&Target::Stitcher), Some(&1));
        // 24 indexer messages: 3 batches; 1 stitcher message: 1.
        assert_eq!(report.batch_calls, 4);
        assert!(report.failed.is_empty());
        assert_eq!(
            report.repositories[0],
            RepositoryEnqueue {
                repository: "app".into(),
                index: 23,
                stitch: 1,
                after_stitch: 1,
                failed: 0
            }
        );
        assert_eq!(report.repositories[1].index, 1);
        let stitcher = queue.messages(Target::Stitcher);
        assert_eq!(stitcher.len(), 1);
        assert!(stitcher[0].body.contains("\"nine-amd64\""));
        // The stitch's follow-up indexing is left to the stitcher's own push event.
        assert!(queue
            .messages(Target::Indexer)
            .iter()
            .all(|m| !m.body.contains("\"image-tag\":\"nine\"")));

        let again = enqueue(&queue, &surveys(), &settings).await.unwrap();
        assert_eq!(
            again.total_sent(),
            25,
            "the queue accepts; FIFO drops the copies"
        );
        assert_eq!(queue.messages(Target::Indexer).len(), 24);
        assert_eq!(queue.messages(Target::Stitcher).len(), 1);
    }

    #[tokio::test]
    async fn progress_is_reported_without_extra_batches() {
        let mut many = surveys();
        for n in 0..200 {
            many[1]
                .work
                .push(work(WorkKind::Index, "web", &format!("t{n}"), 1000 + n));
        }
        let queue = MemoryQueue::new();
        let seen = std::sync::Mutex::new(Vec::new());
        let report = enqueue_with_progress(
            &queue,
            &many,
            &settings(),
            Some(&|n| seen.lock().unwrap().push(n)),
        )
        .await
        .unwrap();
        // 224 indexer messages: 23 batches; 1 stitcher message: 1.
        assert_eq!(report.batch_calls, 24);
        assert_eq!(*seen.lock().unwrap(), [100, 200, 224, 225]);
    }

    /// Refuses the entries of tag `3` for good, then fails every call after `calls`.
    struct Picky {
        inner: MemoryQueue,
        calls_left: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl WorkQueue for Picky {
        fn queue_of(&self, target: Target) -> String {
            format!("picky:{}", target.name())
        }
        async fn send_batch(
            &self,
            target: Target,
            messages: &[OutgoingMessage],
        ) -> Result<Vec<EntryFailure>, QueueError> {
            use std::sync::atomic::Ordering;
            if self.calls_left.fetch_sub(1, Ordering::SeqCst) == 0 {
                return Err(QueueError {
                    message: "picky: AccessDenied".into(),
                    retryable: false,
                });
            }
            let refused: Vec<usize> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.body.contains("\"image-tag\":\"3\""))
                .map(|(i, _)| i)
                .collect();
            let kept: Vec<OutgoingMessage> = messages
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(i))
                .map(|(_, m)| m.clone())
                .collect();
            self.inner.send_batch(target, &kept).await?;
            Ok(refused
                .into_iter()
                .map(|index| EntryFailure {
                    index,
                    code: "InvalidMessageContents".into(),
                    message: "refused".into(),
                    sender_fault: true,
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn refused_messages_are_named_and_a_failed_call_stops_with_what_was_sent() {
        let queue = Picky {
            inner: MemoryQueue::new(),
            calls_left: 100.into(),
        };
        let report = enqueue(&queue, &surveys(), &settings()).await.unwrap();
        assert_eq!(report.total_sent(), 24);
        assert_eq!(report.failed.len(), 1, "{report:#?}");
        let failed = &report.failed[0];
        assert_eq!(
            (failed.repository.as_str(), failed.tag.as_str()),
            ("app", "3")
        );
        assert_eq!(failed.target, Target::Indexer);
        assert!(failed.reason.contains("picky:indexer"), "{}", failed.reason);
        assert_eq!(report.repositories[0].failed, 1);

        let queue = Picky {
            inner: MemoryQueue::new(),
            calls_left: 1.into(),
        };
        match enqueue(&queue, &surveys(), &settings()).await {
            Err(EnqueueError::Queue { error, report }) => {
                assert!(error.message.contains("AccessDenied"));
                assert_eq!(report.batch_calls, 2);
                assert_eq!(report.total_sent(), 9, "the first batch less tag 3");
            }
            other => panic!("{other:?}"),
        }
    }
}
