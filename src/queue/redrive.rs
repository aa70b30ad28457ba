//! Re-drive: the messages of the functions' dead-letter queue, listed, and on request
//! sent back to the queue each came from.
//!
//! The dead-letter queue is read in rounds of up to ten messages, each round hiding
//! what it received for a while (the visibility timeout), so the next round gets the
//! next messages. The rounds stop at the first empty receive, when a message comes
//! back that was already seen (its visibility timeout ran out, or the queue does not
//! hide messages) or after [`MAX_ROUNDS`].
//!
//! A moved message is sent to its target's queue (the [`TARGET_ATTRIBUTE`] attribute
//! says which) with a new deduplication id: the original may still be inside the FIFO
//! queue's five-minute deduplication window, and SQS would accept the send and drop the
//! message. It is deleted from the dead-letter queue only after its send succeeded, so
//! a failure leaves it where it was, to come back after the visibility timeout. A
//! message without a known target is left in the dead-letter queue and named.
//!
//! [`TARGET_ATTRIBUTE`]: super::TARGET_ATTRIBUTE

use super::MAX_ID_CHARS;
use super::{DeadLetters, OutgoingMessage, QueueError, ReceivedMessage, Target, WorkQueue};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Seconds a message received for a move stays hidden: time to send it and delete it.
pub const MOVE_VISIBILITY_SECONDS: i32 = 60;
/// Seconds a message received for a listing stays hidden: enough for the rounds to get
/// past it, short so a move can follow the listing soon.
pub const LIST_VISIBILITY_SECONDS: i32 = 20;
/// Receives at most per run (ten messages each).
pub const MAX_ROUNDS: usize = 100;

/// How a re-drive runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveOptions {
    /// Send the messages back (else only list them).
    pub apply: bool,
    /// The visibility timeout of each receive.
    pub visibility_seconds: i32,
    /// Receives at most.
    pub max_rounds: usize,
}

impl RedriveOptions {
    /// A listing ([`LIST_VISIBILITY_SECONDS`]) or a move ([`MOVE_VISIBILITY_SECONDS`]),
    /// [`MAX_ROUNDS`] receives at most.
    pub fn new(apply: bool) -> Self {
        Self {
            apply,
            visibility_seconds: if apply {
                MOVE_VISIBILITY_SECONDS
            } else {
                LIST_VISIBILITY_SECONDS
            },
            max_rounds: MAX_ROUNDS,
        }
    }
}

/// What became of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// Listed only.
    Listed,
    /// Sent to its target's queue and deleted from the dead-letter queue.
    Moved {
        /// The queue it went to.
        queue: String,
        /// The deduplication id it was sent with.
        dedup_id: String,
    },
    /// Left in the dead-letter queue: why.
    Left {
        /// Why (no target attribute, a refused send, a failed delete...).
        reason: String,
    },
}

/// One message of the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// `MessageId`.
    pub message_id: String,
    /// The `ReceiptHandle` of the receive that got it (to release a listed message).
    #[serde(skip)]
    pub receipt_handle: String,
    /// The target attribute, as found (maybe unknown).
    pub target: Option<String>,
    /// `MessageGroupId`.
    pub group_id: Option<String>,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// What the body is about (`repository:tag@digest` for an image event).
    pub summary: String,
    /// What was done with it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Why the rounds stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// A receive returned nothing.
    Empty,
    /// A receive returned a message already seen.
    Repeat,
    /// [`RedriveOptions::max_rounds`] receives were made: more may be left.
    RoundCap,
}

/// What a re-drive found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Whether messages were moved (else only listed).
    pub applied: bool,
    /// Every message received, in order.
    pub messages: Vec<DeadLetter>,
    /// Receives made.
    pub rounds: usize,
    /// Why they stopped.
    pub stopped: Stop,
    /// Seconds the received messages stay hidden from other readers (those left where
    /// they were come back after that, unless released: see
    /// [`super::SqsDeadLetters::release`]).
    pub visibility_seconds: i32,
}

impl RedriveReport {
    /// Messages moved back.
    pub fn moved(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Moved { .. }))
    }

    /// Messages left in the dead-letter queue by a move.
    pub fn left(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Left { .. }))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.messages.iter().filter(|m| f(&m.outcome)).count()
    }
}

/// A receive failed: the error, and what was done before it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RedriveError {
    /// The failed call.
    pub error: QueueError,
    /// The messages handled before it.
    pub report: Box<RedriveReport>,
}

/// Lists the dead letters and, with `apply`, moves them back to their queues (see the
/// module doc), with the default [`RedriveOptions`].
pub async fn redrive(
    dead: &dyn DeadLetters,
    queue: &dyn WorkQueue,
    apply: bool,
) -> Result<RedriveReport, RedriveError> {
    redrive_with(dead, queue, &RedriveOptions::new(apply)).await
}

/// [`redrive`] with these options.
pub async fn redrive_with(
    dead: &dyn DeadLetters,
    queue: &dyn WorkQueue,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let mut report = RedriveReport {
        dead_letter_queue: dead.dead_letter_queue(),
        applied: options.apply,
        messages: Vec::new(),
        rounds: 0,
        stopped: Stop::RoundCap,
        visibility_seconds: options.visibility_seconds,
    };
    let mut seen = HashSet::new();
    while report.rounds < options.max_rounds {
        report.rounds += 1;
        let received = match dead.receive(options.visibility_seconds).await {
            Ok(received) => received,
            Err(error) => {
                return Err(RedriveError {
                    error,
                    report: Box::new(report),
                })
            }
        };
        if received.is_empty() {
            report.stopped = Stop::Empty;
            break;
        }
        let before = received.len();
        let fresh: Vec<ReceivedMessage> = received
            .into_iter()
            .filter(|m| seen.insert(m.message_id.clone()))
            .collect();
        let repeated = fresh.len() < before;
        if options.apply {
            report.messages.extend(move_back(dead, queue, fresh).await);
        } else {
            report
                .messages
                .extend(fresh.iter().map(|m| dead_letter(m, Outcome::Listed)));
        }
        if repeated {
            report.stopped = Stop::Repeat;
            break;
        }
    }
    Ok(report)
}

fn dead_letter(message: &ReceivedMessage, outcome: Outcome) -> DeadLetter {
    DeadLetter {
        message_id: message.message_id.clone(),
        receipt_handle: message.receipt_handle.clone(),
        target: message.target.clone(),
        group_id: message.group_id.clone(),
        receive_count: message.receive_count,
        summary: summary(&message.body),
        outcome,
    }
}

/// The deduplication id a moved message is sent with: the original's (or none) with
/// `-redrive-<message id>`, the original cut short so the whole fits in
/// [`MAX_ID_CHARS`] and the message id, which makes it unique, stays whole.
pub fn redrive_dedup_id(original: Option<&str>, message_id: &str) -> String {
    let suffix = format!("-redrive-{message_id}");
    let room = MAX_ID_CHARS.saturating_sub(suffix.chars().count());
    let head: String = original.unwrap_or("").chars().take(room).collect();
    let id = format!("{head}{suffix}");
    // A message id longer than the limit on its own: keep the end, where ids differ.
    let extra = id.chars().count().saturating_sub(MAX_ID_CHARS);
    id.chars().skip(extra).collect()
}

/// Sends `messages` back, one SendMessageBatch per target, and deletes each one sent.
async fn move_back(
    dead: &dyn DeadLetters,
    queue: &dyn WorkQueue,
    messages: Vec<ReceivedMessage>,
) -> Vec<DeadLetter> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; messages.len()];
    let mut by_target: BTreeMap<Target, Vec<usize>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        match m.target.as_deref().map(|t| (t, Target::from_name(t))) {
            Some((_, Some(target))) => by_target.entry(target).or_default().push(i),
            Some((name, None)) => {
                outcomes[i] = Some(Outcome::Left {
                    reason: format!(
                        "unknown target {:?} in its {} attribute",
                        crate::format::printable(name),
                        super::TARGET_ATTRIBUTE
                    ),
                })
            }
            None => {
                outcomes[i] = Some(Outcome::Left {
                    reason: format!(
                        "no {} attribute: which queue it came from is unknown",
                        super::TARGET_ATTRIBUTE
                    ),
                })
            }
        }
    }
    for (target, indexes) in by_target {
        let outgoing: Vec<OutgoingMessage> = indexes
            .iter()
            .map(|&i| {
                let m = &messages[i];
                OutgoingMessage {
                    target,
                    body: m.body.clone(),
                    dedup_id: redrive_dedup_id(m.dedup_id.as_deref(), &m.message_id),
                    // A FIFO dead-letter queue keeps the group; a message without one
                    // gets a group of its own.
                    group_id: m.group_id.clone().unwrap_or_else(|| m.message_id.clone()),
                }
            })
            .collect();
        let destination = queue.queue_of(target);
        let refused: BTreeMap<usize, String> = match queue.send_batch(target, &outgoing).await {
            Ok(failures) => failures
                .into_iter()
                .map(|f| {
                    (
                        f.index,
                        format!("{destination} refused it: {} ({})", f.message, f.code),
                    )
                })
                .collect(),
            Err(e) => (0..outgoing.len())
                .map(|n| (n, format!("sending to {destination}: {e}")))
                .collect(),
        };
        for (n, &i) in indexes.iter().enumerate() {
            outcomes[i] = Some(match refused.get(&n) {
                Some(reason) => Outcome::Left {
                    reason: reason.clone(),
                },
                None => match dead.delete(&messages[i].receipt_handle).await {
                    Ok(()) => Outcome::Moved {
                        queue: destination.clone(),
                        dedup_id: outgoing[n].dedup_id.clone(),
                    },
                    // Sent, but still in the dead-letter queue: a later re-drive sends
                    // it again (the work is idempotent; within five minutes the new
                    // deduplication id drops the copy).
                    Err(e) => Outcome::Left {
                        reason: format!(
                            "sent to {destination} but not deleted from the dead-letter queue: {e}"
                        ),
                    },
                },
            });
        }
    }
    messages
        .iter()
        .zip(outcomes)
        .map(|(m, o)| dead_letter(m, o.expect("every message has an outcome")))
        .collect()
}

/// What a message body is about: `repository:tag@digest` for an image event, the
/// repository for a janitor sweep, the `detail-type` of another event, the size of
/// anything else.
pub fn summary(body: &str) -> String {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .map(|s| crate::format::printable(s).to_string())
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("not JSON ({} bytes)", body.len());
    };
    let detail = value.get("detail").cloned().unwrap_or_default();
    match text(&value, "detail-type").as_deref() {
        Some(crate::events::ECR_IMAGE_ACTION) => format!(
            "{}:{}@{}",
            text(&detail, "repository-name").unwrap_or_else(|| "?".into()),
            text(&detail, "image-tag").unwrap_or_default(),
            text(&detail, "image-digest").unwrap_or_else(|| "?".into()),
        ),
        Some("Janitor Repository Sweep") => format!(
            "sweep of {} (run {})",
            text(&detail, "repository").unwrap_or_else(|| "?".into()),
            text(&detail, "run-id").unwrap_or_else(|| "?".into()),
        ),
        Some(other) => other.to_string(),
        None => format!("JSON without detail-type ({} bytes)", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EntryFailure, MemoryQueue};

    fn image_body(tag: &str) -> String {
        serde_json::json!({
            "version": "0", "id": "x", "source": "aws.ecr",
            "detail-type": "ECR Image Action", "account": "123456789012",
            "region": "us-east-1", "time": "2026-01-01T00:00:00Z", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "app", "action-type": "PUSH",
                       "image-digest": "sha256:ab", "image-tag": tag}
        })
        .to_string()
    }

    fn work(target: Target, tag: &str) -> OutgoingMessage {
        OutgoingMessage {
            target,
            body: image_body(tag),
            dedup_id: format!("work-{tag}"),
            group_id: "app".into(),
        }
    }

    #[tokio::test]
    async fn a_listing_changes_nothing_and_stops_at_the_first_repeat() {
        let queue = MemoryQueue::new();
        for n in 0..12 {
            queue.kill(&work(Target::Indexer, &n.to_string()), 3);
        }
        let report = redrive(&queue, &queue, false).await.unwrap();
        // The double hides nothing: round 1 has ten, round 2 the same ten again.
        assert_eq!(report.stopped, Stop::Repeat);
        assert_eq!(report.rounds, 2);
        assert_eq!(report.messages.len(), 10);
        assert!(report.messages.iter().all(|m| m.outcome == Outcome::Listed));
        assert_eq!(report.messages[0].summary, "app:0@sha256:ab");
        assert_eq!(report.messages[0].receive_count, 3);
        assert_eq!(report.messages[0].target.as_deref(), Some("indexer"));
        assert_eq!(queue.dead_letters().len(), 12);
        assert_eq!(queue.send_batch_calls(), 0);
    }

    #[tokio::test]
    async fn a_move_sends_each_back_under_a_new_dedup_id_then_empties_the_queue() {
        let queue = MemoryQueue::new();
        let original = work(Target::Stitcher, "1-amd64");
        // Sent once already: the double, like a FIFO queue within its window, drops a
        // second send under the same deduplication id.
        queue
            .send_batch(Target::Stitcher, std::slice::from_ref(&original))
            .await
            .unwrap();
        queue.drain(Target::Stitcher);
        queue.kill(&original, 2);
        for n in 0..11 {
            queue.kill(&work(Target::Indexer, &n.to_string()), 2);
        }
        let report = redrive(&queue, &queue, true).await.unwrap();
        assert_eq!(report.stopped, Stop::Empty);
        assert_eq!(report.moved(), 12, "{report:#?}");
        assert!(queue.dead_letters().is_empty());
        let back = queue.messages(Target::Stitcher);
        assert_eq!(
            back.len(),
            1,
            "the redriven message was dropped as a duplicate"
        );
        assert_eq!(back[0].body, original.body);
        assert_eq!(back[0].group_id, "app");
        assert!(
            back[0].dedup_id.starts_with("work-1-amd64-redrive-dead-"),
            "{}",
            back[0].dedup_id
        );
        assert_eq!(queue.messages(Target::Indexer).len(), 11);
    }

    #[tokio::test]
    async fn messages_without_a_known_target_stay_and_are_named() {
        let queue = MemoryQueue::new();
        queue.kill(&work(Target::Indexer, "1"), 2);
        queue.kill(&work(Target::Indexer, "2"), 2);
        let mut dead = queue.dead_letters();
        dead[0].target = None;
        dead[1].target = Some("builder".into());
        let faulty = Lettered {
            dead,
            inner: queue,
            deleted: Default::default(),
        };
        let report = redrive(&faulty, &faulty.inner, true).await.unwrap();
        assert_eq!(report.moved(), 0);
        assert_eq!(report.left(), 2);
        let reasons: Vec<String> = report
            .messages
            .iter()
            .map(|m| match &m.outcome {
                Outcome::Left { reason } => reason.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            reasons[0].contains("no afterpush-target attribute"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("\"builder\""), "{reasons:?}");
        assert_eq!(faulty.inner.send_batch_calls(), 0);
        assert_eq!(faulty.deleted.lock().unwrap().len(), 0);
    }

    /// The same dead letters at every receive, deletions recorded.
    struct Lettered {
        dead: Vec<ReceivedMessage>,
        inner: MemoryQueue,
        deleted: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl DeadLetters for Lettered {
        fn dead_letter_queue(&self) -> String {
            "given".into()
        }
        async fn receive(&self, _: i32) -> Result<Vec<ReceivedMessage>, QueueError> {
            Ok(self.dead.clone())
        }
        async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
            self.deleted.lock().unwrap().push(receipt_handle.into());
            Ok(())
        }
    }

    /// Refuses every entry of the indexer's queue.
    struct RefusingIndexer(MemoryQueue);

    #[async_trait::async_trait]
    impl WorkQueue for RefusingIndexer {
        fn queue_of(&self, target: Target) -> String {
            self.0.queue_of(target)
        }
        async fn send_batch(
            &self,
            target: Target,
            messages: &[OutgoingMessage],
        ) -> Result<Vec<EntryFailure>, QueueError> {
            if target == Target::Indexer {
                return Ok((0..messages.len())
                    .map(|index| EntryFailure {
                        index,
                        code: "InvalidParameterValue".into(),
                        message: "no".into(),
                        sender_fault: true,
                    })
                    .collect());
            }
            self.0.send_batch(target, messages).await
        }
    }

    #[tokio::test]
    async fn a_refused_send_leaves_the_message_in_the_dead_letter_queue() {
        let dead = MemoryQueue::new();
        dead.kill(&work(Target::Indexer, "1"), 2);
        dead.kill(&work(Target::Stitcher, "2-amd64"), 2);
        let queue = RefusingIndexer(MemoryQueue::new());
        let report = redrive_with(
            &dead,
            &queue,
            &RedriveOptions {
                apply: true,
                visibility_seconds: 60,
                max_rounds: 1,
            },
        )
        .await
        .unwrap();
        assert_eq!(report.stopped, Stop::RoundCap);
        assert_eq!((report.moved(), report.left()), (1, 1), "{report:#?}");
        let left = dead.dead_letters();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].target.as_deref(), Some("indexer"));
        assert_eq!(queue.0.messages(Target::Stitcher).len(), 1);
        match &report.messages[0].outcome {
            Outcome::Left { reason } => {
                assert!(reason.contains("InvalidParameterValue"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redrive_dedup_ids_fit_and_keep_the_message_id() {
        assert_eq!(redrive_dedup_id(Some("abc"), "m-1"), "abc-redrive-m-1");
        assert_eq!(redrive_dedup_id(None, "m-1"), "-redrive-m-1");
        let long = "x".repeat(200);
        let id = redrive_dedup_id(Some(&long), "0f3c");
        assert_eq!(id.len(), MAX_ID_CHARS);
        assert!(id.ends_with("-redrive-0f3c"), "{id}");
        let id = redrive_dedup_id(None, &"m".repeat(300));
        assert_eq!(id.len(), MAX_ID_CHARS);
    }

    #[test]
    fn summaries_name_what_the_message_is_about() {
        assert_eq!(summary(&image_body("1.2")), "app:1.2@sha256:ab");
        let sweep = serde_json::json!({"detail-type": "Janitor Repository Sweep",
            "detail": {"run-id": "r1", "repository": "team/app", "repositories": 3}});
        assert_eq!(summary(&sweep.to_string()), "sweep of team/app (run r1)");
        assert_eq!(summary("{\"detail-type\":\"Other\"}"), "Other");
        assert_eq!(summary("nope"), "not JSON (4 bytes)");
    }
}
