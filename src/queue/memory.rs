//! An in-memory [`WorkQueue`] and [`DeadLetters`] for tests and benchmarks: FIFO
//! deduplication on `MessageDeduplicationId` (with no time window), and a count of the
//! SendMessageBatch calls made.

use super::{
    DeadLetters, EntryFailure, OutgoingMessage, QueueError, ReceivedMessage, Target, WorkQueue,
    SEND_BATCH,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Queues held in memory, one per target, plus one dead-letter queue.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queues: BTreeMap<Target, Vec<OutgoingMessage>>,
    seen: HashSet<(Target, String)>,
    dead: Vec<ReceivedMessage>,
    send_batch_calls: u64,
    next_id: u64,
}

impl MemoryQueue {
    /// Empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages sent to `target` and kept (duplicates dropped), in order.
    pub fn messages(&self, target: Target) -> Vec<OutgoingMessage> {
        let state = self.state.lock().unwrap();
        state.queues.get(&target).cloned().unwrap_or_default()
    }

    /// Takes the messages sent to `target`, leaving its queue empty.
    pub fn drain(&self, target: Target) -> Vec<OutgoingMessage> {
        let mut state = self.state.lock().unwrap();
        state.queues.remove(&target).unwrap_or_default()
    }

    /// How many SendMessageBatch calls were made.
    pub fn send_batch_calls(&self) -> u64 {
        self.state.lock().unwrap().send_batch_calls
    }

    /// Puts `message` in the dead-letter queue, as SQS does after too many receives.
    pub fn kill(&self, message: &OutgoingMessage, receive_count: u32) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("dead-{}", state.next_id);
        state.dead.push(ReceivedMessage {
            message_id: id.clone(),
            receipt_handle: id,
            body: message.body.clone(),
            target: Some(message.target.name().to_string()),
            group_id: Some(message.group_id.clone()),
            dedup_id: Some(message.dedup_id.clone()),
            receive_count,
        });
    }

    /// The messages in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<ReceivedMessage> {
        self.state.lock().unwrap().dead.clone()
    }
}

#[async_trait::async_trait]
impl WorkQueue for MemoryQueue {
    fn queue_of(&self, target: Target) -> String {
        format!("memory:{}", target.name())
    }

    async fn send_batch(
        &self,
        target: Target,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        if messages.len() > SEND_BATCH {
            return Err(QueueError {
                message: format!(
                    "{}: {} entries in one SendMessageBatch (at most {SEND_BATCH})",
                    self.queue_of(target),
                    messages.len()
                ),
                retryable: false,
            });
        }
        let mut state = self.state.lock().unwrap();
        state.send_batch_calls += 1;
        for message in messages {
            if state.seen.insert((target, message.dedup_id.clone())) {
                state
                    .queues
                    .entry(target)
                    .or_default()
                    .push(message.clone());
            }
        }
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl DeadLetters for MemoryQueue {
    fn dead_letter_queue(&self) -> String {
        "memory:dead-letters".into()
    }

    async fn receive(&self, _visibility_seconds: i32) -> Result<Vec<ReceivedMessage>, QueueError> {
        let state = self.state.lock().unwrap();
        Ok(state.dead.iter().take(SEND_BATCH).cloned().collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = self.state.lock().unwrap();
        state.dead.retain(|m| m.receipt_handle != receipt_handle);
        Ok(())
    }
}
