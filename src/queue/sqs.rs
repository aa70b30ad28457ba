//! The functions' work queues and their dead-letter queue on Amazon SQS: [`SqsQueues`]
//! (one FIFO queue per [`Target`], each named by its own variable) and
//! [`SqsDeadLetters`] (the dead-letter queue the three share).
//!
//! Every entry sent carries its `MessageGroupId`, its `MessageDeduplicationId` and the
//! [`TARGET_ATTRIBUTE`] message attribute; a receive asks for the group, deduplication
//! and receive-count system attributes and for that message attribute, so a message
//! read back from the dead-letter queue still says where it came from. SDK failures go
//! through [`SdkFailure::of`], so throttling, 5xx and timeouts are reported retryable.

use super::{
    DeadLetters, EntryFailure, OutgoingMessage, QueueError, ReceivedMessage, Target, WorkQueue,
    SEND_BATCH, TARGET_ATTRIBUTE,
};
use crate::catalog::aws_error::SdkFailure;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use std::collections::BTreeMap;

/// `INDEXER_QUEUE_URL`: the SOCI indexer's work queue.
pub const INDEXER_QUEUE_URL: &str = crate::settings::INDEXER_QUEUE_URL;
/// `STITCHER_QUEUE_URL`: the manifest stitcher's work queue.
pub const STITCHER_QUEUE_URL: &str = crate::settings::STITCHER_QUEUE_URL;
/// `JANITOR_QUEUE_URL`: the cache janitor's per-repository sweep queue.
pub const JANITOR_QUEUE_URL: &str = "JANITOR_QUEUE_URL";
/// `DEAD_LETTER_QUEUE_URL`: where messages that kept failing end up.
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";

/// Seconds a dead-letter receive waits for messages: long polling asks every SQS
/// server, where a short poll may answer "nothing" while messages are there, and a
/// re-drive stops at the first empty answer.
pub const RECEIVE_WAIT_SECONDS: i32 = 2;

/// The variable naming `target`'s queue URL.
pub fn queue_url_variable(target: Target) -> &'static str {
    match target {
        Target::Indexer => INDEXER_QUEUE_URL,
        Target::Stitcher => STITCHER_QUEUE_URL,
        Target::Janitor => JANITOR_QUEUE_URL,
    }
}

/// A variable's value, unset when missing or blank.
fn read(get: &impl Fn(&str) -> Option<String>, variable: &str) -> Option<String> {
    get(variable)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The functions' work queues: a queue URL per target, from the environment.
#[derive(Debug, Clone)]
pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
    urls: BTreeMap<Target, String>,
}

impl SqsQueues {
    /// The queues at `urls`; a target missing from it has no queue (sending to it fails,
    /// naming its variable).
    pub fn new(client: aws_sdk_sqs::Client, urls: BTreeMap<Target, String>) -> Self {
        Self { client, urls }
    }

    /// The queues `INDEXER_QUEUE_URL`, `STITCHER_QUEUE_URL` and `JANITOR_QUEUE_URL` name.
    pub fn from_env(client: aws_sdk_sqs::Client) -> Self {
        Self::from_lookup(client, |k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading variables through `get`.
    pub fn from_lookup(client: aws_sdk_sqs::Client, get: impl Fn(&str) -> Option<String>) -> Self {
        let urls = Target::ALL
            .into_iter()
            .filter_map(|t| read(&get, queue_url_variable(t)).map(|url| (t, url)))
            .collect();
        Self::new(client, urls)
    }

    /// `target`'s queue URL, or an error naming the variable that should hold it.
    pub fn url(&self, target: Target) -> Result<&str, QueueError> {
        self.urls
            .get(&target)
            .map(String::as_str)
            .ok_or_else(|| QueueError {
                message: format!(
                    "{} is not set: there is no queue to send the {} work to",
                    queue_url_variable(target),
                    target.name()
                ),
                retryable: false,
            })
    }
}

/// A failed SDK call as a [`QueueError`] naming the operation and the queue.
fn queue_error<E>(operation: &str, url: &str, err: &aws_sdk_sqs::error::SdkError<E>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata
        + aws_config::retry::ProvideErrorKind
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let failure = SdkFailure::of(err);
    QueueError {
        message: format!(
            "{operation} on {url} ({}): {}",
            failure.kind, failure.message
        ),
        retryable: failure.kind.is_retryable(),
    }
}

/// The SendMessageBatch entry of `message`: its index in the batch is its entry id,
/// which is how a refusal names it.
fn entry(index: usize, message: &OutgoingMessage) -> Result<SendMessageBatchRequestEntry, String> {
    let target = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(message.target.name())
        .build()
        .map_err(|e| e.to_string())?;
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(&message.body)
        .message_group_id(&message.group_id)
        .message_deduplication_id(&message.dedup_id)
        .message_attributes(TARGET_ATTRIBUTE, target)
        .build()
        .map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl WorkQueue for SqsQueues {
    fn queue_of(&self, target: Target) -> String {
        match self.urls.get(&target) {
            Some(url) => url.clone(),
            None => format!("({} unset)", queue_url_variable(target)),
        }
    }

    async fn send_batch(
        &self,
        target: Target,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let url = self.url(target)?;
        if messages.len() > SEND_BATCH {
            return Err(QueueError {
                message: format!(
                    "{url}: {} entries in one SendMessageBatch (at most {SEND_BATCH})",
                    messages.len()
                ),
                retryable: false,
            });
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            if message.target != target {
                return Err(QueueError {
                    message: format!(
                        "{url}: message {} is for the {} queue, not the {}",
                        message.dedup_id,
                        message.target.name(),
                        target.name()
                    ),
                    retryable: false,
                });
            }
            entries.push(entry(index, message).map_err(|e| QueueError {
                message: format!("{url}: message {}: {e}", message.dedup_id),
                retryable: false,
            })?);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error("SendMessageBatch", url, &e))?;
        let mut failures = Vec::with_capacity(output.failed().len());
        for failed in output.failed() {
            let index = failed
                .id()
                .parse::<usize>()
                .ok()
                .filter(|i| *i < messages.len())
                .ok_or_else(|| QueueError {
                    message: format!(
                        "SendMessageBatch on {url}: a refusal names entry {:?}, which was not sent",
                        failed.id()
                    ),
                    retryable: false,
                })?;
            failures.push(EntryFailure {
                index,
                code: failed.code().to_string(),
                message: failed.message().unwrap_or_default().to_string(),
                sender_fault: failed.sender_fault(),
            });
        }
        Ok(failures)
    }
}

/// The functions' dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsDeadLetters {
    /// The dead-letter queue at `url`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// The queue `DEAD_LETTER_QUEUE_URL` names; an error naming the variable when unset.
    pub fn from_env(client: aws_sdk_sqs::Client) -> Result<Self, QueueError> {
        Self::from_lookup(client, |k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading variables through `get`.
    pub fn from_lookup(
        client: aws_sdk_sqs::Client,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, QueueError> {
        match read(&get, DEAD_LETTER_QUEUE_URL) {
            Some(url) => Ok(Self::new(client, url)),
            None => Err(QueueError {
                message: format!(
                    "{DEAD_LETTER_QUEUE_URL} is not set: it names the functions' dead-letter queue"
                ),
                retryable: false,
            }),
        }
    }
}

impl SqsDeadLetters {
    /// ChangeMessageVisibility to 0: a received message visible again at once, so a
    /// listing does not hide the messages it showed from the move that follows it.
    pub async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| queue_error("ChangeMessageVisibility", &self.url, &e))?;
        Ok(())
    }
}

/// A received SQS message as the port describes it.
fn received(
    url: &str,
    message: &aws_sdk_sqs::types::Message,
) -> Result<ReceivedMessage, QueueError> {
    let missing = |what: &str| QueueError {
        message: format!("ReceiveMessage on {url}: a message without its {what}"),
        retryable: false,
    };
    let attribute = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|a| a.get(&name))
            .map(String::to_string)
    };
    Ok(ReceivedMessage {
        message_id: message
            .message_id()
            .ok_or_else(|| missing("MessageId"))?
            .to_string(),
        receipt_handle: message
            .receipt_handle()
            .ok_or_else(|| missing("ReceiptHandle"))?
            .to_string(),
        body: message.body().unwrap_or_default().to_string(),
        target: message
            .message_attributes()
            .and_then(|a| a.get(TARGET_ATTRIBUTE))
            .and_then(|v| v.string_value())
            .map(str::to_string),
        group_id: attribute(MessageSystemAttributeName::MessageGroupId),
        dedup_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
        receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl DeadLetters for SqsDeadLetters {
    fn dead_letter_queue(&self) -> String {
        self.url.clone()
    }

    async fn receive(&self, visibility_seconds: i32) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(SEND_BATCH as i32)
            .visibility_timeout(visibility_seconds)
            .wait_time_seconds(RECEIVE_WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::MessageDeduplicationId)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(TARGET_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| queue_error("ReceiveMessage", &self.url, &e))?;
        output
            .messages()
            .iter()
            .map(|m| received(&self.url, m))
            .collect()
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| queue_error("DeleteMessage", &self.url, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> aws_sdk_sqs::Client {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        crate::aws_clients::ClientSettings::default().sqs(&sdk)
    }

    fn message(target: Target) -> OutgoingMessage {
        OutgoingMessage {
            target,
            body: "{}".into(),
            dedup_id: "d".into(),
            group_id: "g".into(),
        }
    }

    #[tokio::test]
    async fn each_target_has_its_variable_and_an_unset_one_is_named_when_sent_to() {
        let queues = SqsQueues::from_lookup(client(), |k| match k {
            INDEXER_QUEUE_URL => Some("https://sqs.example/indexer.fifo".into()),
            STITCHER_QUEUE_URL => Some("  ".into()),
            _ => None,
        });
        assert_eq!(
            queues.queue_of(Target::Indexer),
            "https://sqs.example/indexer.fifo"
        );
        assert_eq!(
            queues.queue_of(Target::Stitcher),
            "(STITCHER_QUEUE_URL unset)"
        );
        for (target, variable) in [
            (Target::Stitcher, STITCHER_QUEUE_URL),
            (Target::Janitor, JANITOR_QUEUE_URL),
        ] {
            let err = queues
                .send_batch(target, &[message(target)])
                .await
                .unwrap_err();
            assert!(err.message.contains(variable), "{err}");
            assert!(!err.retryable);
        }
    }

    #[tokio::test]
    async fn a_batch_is_refused_before_any_call_when_it_cannot_be_sent() {
        let queues = SqsQueues::from_lookup(client(), |k| {
            (k == INDEXER_QUEUE_URL).then(|| "https://sqs.example/indexer.fifo".to_string())
        });
        let eleven = vec![message(Target::Indexer); SEND_BATCH + 1];
        let err = queues
            .send_batch(Target::Indexer, &eleven)
            .await
            .unwrap_err();
        assert!(err.message.contains("at most 10"), "{err}");
        let err = queues
            .send_batch(Target::Indexer, &[message(Target::Stitcher)])
            .await
            .unwrap_err();
        assert!(err.message.contains("stitcher queue"), "{err}");
    }

    #[test]
    fn the_dead_letter_queue_needs_its_variable() {
        let err = SqsDeadLetters::from_lookup(client(), |_| None).unwrap_err();
        assert!(err.message.contains(DEAD_LETTER_QUEUE_URL), "{err}");
        let dead =
            SqsDeadLetters::from_lookup(client(), |_| Some("https://sqs.example/dlq.fifo".into()))
                .unwrap();
        assert_eq!(dead.dead_letter_queue(), "https://sqs.example/dlq.fifo");
    }

    #[test]
    fn entries_carry_group_dedup_and_target() {
        let e = entry(3, &message(Target::Stitcher)).unwrap();
        assert_eq!(e.id(), "3");
        assert_eq!(e.message_group_id(), Some("g"));
        assert_eq!(e.message_deduplication_id(), Some("d"));
        let target = e
            .message_attributes()
            .unwrap()
            .get(TARGET_ATTRIBUTE)
            .unwrap();
        assert_eq!(target.data_type(), "String");
        assert_eq!(target.string_value(), Some("stitcher"));
    }
}
