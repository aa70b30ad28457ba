//! Sending many messages: batches of [`SEND_BATCH`] per target, the entries SQS refused
//! for a reason another try can fix sent again (a bounded number of times), and a
//! report that names every message that still was not sent.

use super::{OutgoingMessage, QueueError, Target, WorkQueue, SEND_BATCH};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many times an entry refused with a retryable failure is sent again.
pub const ENTRY_RETRIES: usize = 3;

/// What [`send_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendReport {
    /// Messages the queues accepted, per target (a FIFO queue may still drop one as a
    /// duplicate of a message in its deduplication window: that is the point).
    pub sent: BTreeMap<Target, usize>,
    /// SendMessageBatch calls made.
    pub batch_calls: u64,
    /// Messages not sent: the deduplication id and why.
    pub failed: Vec<(String, String)>,
}

impl SendReport {
    /// Messages accepted for every target.
    pub fn total_sent(&self) -> usize {
        self.sent.values().sum()
    }
}

/// Sends `messages`, grouped by target, in batches of at most [`SEND_BATCH`]. A failed
/// call stops the sending (the queue is unreachable or refuses us: more calls would
/// fail the same way) and is returned; what was sent before it is in the report.
pub async fn send_all(
    queue: &dyn WorkQueue,
    messages: &[OutgoingMessage],
) -> Result<SendReport, (QueueError, SendReport)> {
    let mut report = SendReport::default();
    for target in Target::ALL {
        let mine: Vec<&OutgoingMessage> = messages.iter().filter(|m| m.target == target).collect();
        for chunk in mine.chunks(SEND_BATCH) {
            let mut pending: Vec<OutgoingMessage> = chunk.iter().map(|m| (*m).clone()).collect();
            for attempt in 0..=ENTRY_RETRIES {
                report.batch_calls += 1;
                let failures = match queue.send_batch(target, &pending).await {
                    Ok(failures) => failures,
                    Err(e) => return Err((e, report)),
                };
                let refused: std::collections::BTreeSet<usize> =
                    failures.iter().map(|f| f.index).collect();
                *report.sent.entry(target).or_default() += pending.len() - refused.len();
                let mut again = Vec::new();
                for failure in failures {
                    let Some(message) = pending.get(failure.index) else {
                        continue;
                    };
                    if failure.sender_fault || attempt == ENTRY_RETRIES {
                        report.failed.push((
                            message.dedup_id.clone(),
                            format!(
                                "{}: {} ({})",
                                queue.queue_of(target),
                                failure.message,
                                failure.code
                            ),
                        ));
                    } else {
                        again.push(message.clone());
                    }
                }
                if again.is_empty() {
                    break;
                }
                pending = again;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EntryFailure, MemoryQueue};

    fn message(target: Target, n: usize) -> OutgoingMessage {
        OutgoingMessage {
            target,
            body: format!("{{\"n\":{n}}}"),
            dedup_id: format!("{}-{n}", target.name()),
            group_id: "app".into(),
        }
    }

    #[tokio::test]
    async fn batches_of_ten_per_target() {
        let queue = MemoryQueue::new();
        let mut messages: Vec<_> = (0..23).map(|n| message(Target::Indexer, n)).collect();
        messages.extend((0..3).map(|n| message(Target::Stitcher, n)));
        let report = send_all(&queue, &messages).await.unwrap();
        assert_eq!(report.batch_calls, 4);
        assert_eq!(queue.send_batch_calls(), 4);
        assert_eq!(report.total_sent(), 26);
        assert_eq!(queue.messages(Target::Indexer).len(), 23);
        assert_eq!(queue.messages(Target::Stitcher).len(), 3);
        assert!(report.failed.is_empty());
    }

    /// Refuses the last entry of every batch: with a retryable code `retryable` times,
    /// then as a sender fault for good.
    struct Refusing {
        inner: MemoryQueue,
        retryable: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl WorkQueue for Refusing {
        fn queue_of(&self, target: Target) -> String {
            format!("refusing:{}", target.name())
        }
        async fn send_batch(
            &self,
            target: Target,
            messages: &[OutgoingMessage],
        ) -> Result<Vec<EntryFailure>, QueueError> {
            use std::sync::atomic::Ordering;
            let last = messages.len() - 1;
            self.inner.send_batch(target, &messages[..last]).await?;
            let retryable = self.retryable.load(Ordering::SeqCst);
            self.retryable
                .store(retryable.saturating_sub(1), Ordering::SeqCst);
            Ok(vec![EntryFailure {
                index: last,
                code: if retryable > 0 {
                    "InternalError"
                } else {
                    "InvalidParameterValue"
                }
                .into(),
                message: "refused".into(),
                sender_fault: retryable == 0,
            }])
        }
    }

    #[tokio::test]
    async fn retryable_refusals_are_sent_again_and_sender_faults_are_named() {
        let queue = Refusing {
            inner: MemoryQueue::new(),
            retryable: 1.into(),
        };
        let messages: Vec<_> = (0..2).map(|n| message(Target::Indexer, n)).collect();
        let report = send_all(&queue, &messages).await.unwrap();
        // [0, 1]: 1 refused, retryable; [1] again: refused as a sender fault.
        assert_eq!(report.batch_calls, 2);
        assert_eq!(report.total_sent(), 1);
        assert_eq!(queue.inner.messages(Target::Indexer).len(), 1);
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(report.failed[0].0, "indexer-1");
        assert!(
            report.failed[0].1.contains("refusing:indexer"),
            "{report:?}"
        );
        assert!(
            report.failed[0].1.contains("InvalidParameterValue"),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn an_entry_refused_every_time_is_given_up_after_the_retries() {
        let queue = Refusing {
            inner: MemoryQueue::new(),
            retryable: 100.into(),
        };
        let report = send_all(&queue, &[message(Target::Janitor, 0)])
            .await
            .unwrap();
        assert_eq!(report.batch_calls, 1 + ENTRY_RETRIES as u64);
        assert_eq!(report.total_sent(), 0);
        assert_eq!(report.failed.len(), 1);
    }
}
