//! SQS as the tests see it on moto: FIFO work queues with a FIFO dead-letter queue made
//! as the template makes them, the queue counts the tests assert on, receiving with every
//! attribute, and the part of Lambda's event source mapping the tests play themselves:
//! the SQS event it hands a function for a batch of received messages, and deleting the
//! messages the function's `batchItemFailures` does not name.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The account and region of moto's resources, of the queues' ARNs and of the events.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// The template's maxReceiveCount: a message still there at its third receive moves to
/// the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 2;

/// A client for the SQS of `moto`.
pub async fn client(moto: &super::TestMoto) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto.sdk_config().await)
}

/// Creates FIFO queue `name` (with `redrive_policy` when given); returns its URL.
pub async fn create_fifo(
    client: &aws_sdk_sqs::Client,
    name: &str,
    redrive_policy: Option<&str>,
) -> String {
    let mut create = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true");
    if let Some(policy) = redrive_policy {
        create = create.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    let out = create
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateQueue {name}: {e:?}"));
    out.queue_url().expect("a queue URL").to_string()
}

/// Creates FIFO dead-letter queue `dead_letters`, then FIFO queues `work`, each moving a
/// message to the dead-letter queue after [`MAX_RECEIVE_COUNT`] receives; returns the
/// work queues' URLs (in the order of `work`) and the dead-letter queue's URL.
pub async fn create_fifo_with_dead_letters<const N: usize>(
    client: &aws_sdk_sqs::Client,
    work: [&str; N],
    dead_letters: &str,
) -> ([String; N], String) {
    let dead = create_fifo(client, dead_letters, None).await;
    let arn = client
        .get_queue_attributes()
        .queue_url(&dead)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes {dead_letters}: {e:?}"))
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("the dead-letter queue's ARN");
    let policy = json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
    })
    .to_string();
    let mut urls = Vec::with_capacity(N);
    for name in work {
        urls.push(create_fifo(client, name, Some(&policy)).await);
    }
    let urls: [String; N] = urls.try_into().expect("one URL per queue");
    (urls, dead)
}

/// (visible, in flight) messages of `url`.
pub async fn counts(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes {url}: {e:?}"));
    let get = |name: QueueAttributeName| -> u64 {
        out.attributes()
            .and_then(|a| a.get(&name))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// One ReceiveMessage of up to ten messages with every attribute, hidden for
/// `visibility` seconds (0: left visible). Each receive counts towards the queue's
/// maxReceiveCount.
pub async fn receive(client: &aws_sdk_sqs::Client, url: &str, visibility: i32) -> Vec<Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap_or_else(|e| panic!("ReceiveMessage {url}: {e:?}"))
        .messages()
        .to_vec()
}

/// Deletes received message `m` from `url`.
pub async fn delete(client: &aws_sdk_sqs::Client, url: &str, m: &Message) {
    client
        .delete_message()
        .queue_url(url)
        .receipt_handle(m.receipt_handle().expect("a receipt handle"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteMessage {:?} from {url}: {e:?}", m.message_id()));
}

/// Deletes the messages of `batch` whose ids `failed` does not name, as the event source
/// mapping does with a batch its function answered; returns the ones `failed` names
/// (left in flight, to be received again).
pub async fn delete_handled<'a, S: AsRef<str>>(
    client: &aws_sdk_sqs::Client,
    url: &str,
    batch: &'a [Message],
    failed: &[S],
) -> Vec<&'a Message> {
    let mut left = vec![];
    for m in batch {
        let id = m.message_id().expect("a message id");
        if failed.iter().any(|f| f.as_ref() == id) {
            left.push(m);
        } else {
            delete(client, url, m).await;
        }
    }
    left
}

/// The message ids a function's answer to an SQS event names in `batchItemFailures`.
pub fn batch_item_failures(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not a partial batch response: {answer}"))
        .iter()
        .map(|f| {
            f["itemIdentifier"]
                .as_str()
                .unwrap_or_else(|| panic!("a failure without an itemIdentifier: {f}"))
                .to_string()
        })
        .collect()
}

/// System attribute `name` of received message `m` (the test fails when it is missing).
pub fn system_attribute(m: &Message, name: MessageSystemAttributeName) -> &str {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{name:?} missing from {m:?}"))
}

/// The FIFO message group of received message `m`.
pub fn group(m: &Message) -> &str {
    system_attribute(m, MessageSystemAttributeName::MessageGroupId)
}

/// The `afterpush-target` message attribute of `m`, when it has one.
pub fn target_attribute(m: &Message) -> Option<&str> {
    m.message_attributes()
        .and_then(|a| a.get(afterpush::queue::TARGET_ATTRIBUTE))
        .and_then(|v| v.string_value())
}

/// Lambda's SQS event for `batch`, received from queue `queue_name`, as an event source
/// mapping hands it to the function.
pub fn lambda_event(batch: &[Message], queue_name: &str) -> Value {
    let records: Vec<Value> = batch
        .iter()
        .map(|m| {
            let attributes: BTreeMap<String, String> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect();
            let message_attributes: BTreeMap<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({
                            "stringValue": v.string_value(),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": v.data_type(),
                        }),
                    )
                })
                .collect();
            json!({
                "messageId": m.message_id().unwrap(),
                "receiptHandle": m.receipt_handle().unwrap(),
                "body": m.body().unwrap(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body().unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}"),
                "awsRegion": REGION,
            })
        })
        .collect();
    json!({ "Records": records })
}
