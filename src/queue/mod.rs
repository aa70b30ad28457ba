//! Work queues: how a survey hands its work to the functions (SQS FIFO queues, one per
//! function, consumed through Lambda event source mappings), and how messages that kept
//! failing come back from the dead-letter queue.
//!
//! The calls go through the small [`WorkQueue`] and [`DeadLetters`] ports, so the
//! batching and re-drive logic is the same against SQS and against the in-memory
//! `MemoryQueue` (test-util) the benchmark counts calls on.

#[cfg(any(test, feature = "test-util"))]
mod memory;
pub mod redrive;
pub mod send;
pub mod sqs;

#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryQueue;
pub use redrive::{redrive, RedriveReport};
pub use send::{send_all, SendReport};
pub use sqs::{SqsDeadLetters, SqsQueues};

use serde::{Deserialize, Serialize};

/// SendMessageBatch takes at most 10 entries.
pub const SEND_BATCH: usize = 10;
/// A FIFO queue's deduplication and group ids are at most 128 characters.
pub const MAX_ID_CHARS: usize = 128;

/// Which function a message is for (each function consumes its own queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The SOCI indexer.
    Indexer,
    /// The manifest stitcher.
    Stitcher,
    /// The cache janitor (one repository's sweep).
    Janitor,
}

impl Target {
    /// Every target, in a fixed order.
    pub const ALL: [Target; 3] = [Target::Indexer, Target::Stitcher, Target::Janitor];

    /// The name in messages, settings and reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Indexer => "indexer",
            Target::Stitcher => "stitcher",
            Target::Janitor => "janitor",
        }
    }

    /// The target named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The message attribute naming a message's [`Target`]: it survives the move to the
/// dead-letter queue, so a re-drive knows where each message came from.
pub const TARGET_ATTRIBUTE: &str = "afterpush-target";

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutgoingMessage {
    /// The function it is for.
    pub target: Target,
    /// The body: an EventBridge-shaped event the function takes as it is.
    pub body: String,
    /// `MessageDeduplicationId`: the same work gets the same id, so work still in the
    /// queue's deduplication window is not sent twice.
    pub dedup_id: String,
    /// `MessageGroupId`: messages of one group are delivered in order, one at a time.
    pub group_id: String,
}

/// A message as received (from a dead-letter queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedMessage {
    /// `MessageId`.
    pub message_id: String,
    /// `ReceiptHandle`, for the delete.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// The [`TARGET_ATTRIBUTE`] attribute, when the message has it.
    pub target: Option<String>,
    /// `MessageGroupId`, for a FIFO queue.
    pub group_id: Option<String>,
    /// `MessageDeduplicationId`, for a FIFO queue.
    pub dedup_id: Option<String>,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
}

/// One entry of a batch the queue refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryFailure {
    /// The index of the entry in the batch sent.
    pub index: usize,
    /// `Code`.
    pub code: String,
    /// `Message`.
    pub message: String,
    /// `SenderFault`: false means another try may succeed.
    pub sender_fault: bool,
}

/// A failed queue call, after the SDK's own retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    /// What failed, naming the queue.
    pub message: String,
    /// Whether another try may succeed (throttling, a 5xx, a timeout).
    pub retryable: bool,
}

/// Sending to the functions' queues.
#[async_trait::async_trait]
pub trait WorkQueue: Send + Sync {
    /// Where `target`'s messages go (a queue URL), for messages and reports.
    fn queue_of(&self, target: Target) -> String;
    /// SendMessageBatch of up to [`SEND_BATCH`] messages, all for `target`: the entries
    /// refused, by index.
    async fn send_batch(
        &self,
        target: Target,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<EntryFailure>, QueueError>;
}

/// Reading and emptying the functions' dead-letter queue.
#[async_trait::async_trait]
pub trait DeadLetters: Send + Sync {
    /// Where the dead letters are (a queue URL).
    fn dead_letter_queue(&self) -> String;
    /// ReceiveMessage: up to 10 messages, hidden from other readers for
    /// `visibility_seconds`.
    async fn receive(&self, visibility_seconds: i32) -> Result<Vec<ReceivedMessage>, QueueError>;
    /// DeleteMessage of one received message.
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;
}
