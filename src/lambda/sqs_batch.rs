//! A batch of SQS records, each carrying one EventBridge event in its `body`, handled by
//! a function as it handles that event when EventBridge invokes it directly.
//!
//! Lambda's SQS event source hands a function the standard SQS event: a top-level
//! `Records` array whose records have `eventSource: "aws:sqs"`, a `messageId` and the
//! message `body`. Each body is read with [`crate::strict_json`] (an object with a key
//! twice is refused) and goes to the function's own [`Function::handle`], so triggers,
//! decisions and the own-output and skip rules are exactly those of a direct event.
//!
//! The answer is a partial batch response, which Lambda reads when the event source
//! mapping has `FunctionResponseTypes: [ReportBatchItemFailures]`:
//!
//! ```json
//! {"batchItemFailures": [{"itemIdentifier": "<messageId>"}],
//!  "records": [{"status": "handled", "messageId": "..", "output": {..}},
//!              {"status": "failed", "messageId": "..", "errorType": "NonRetryable", "error": ".."},
//!              {"status": "not-started", "messageId": "..", "reason": ".."}]}
//! ```
//!
//! Only `batchItemFailures` decides anything: the messages it names go back to the
//! queue, every other one is deleted. `records` says per message what happened, for the
//! people reading `afterpush invoke` or the logs; it is left out (`recordsLeftOut` says
//! how many) when it would make the response large, since a response Lambda cannot take
//! fails the whole batch.
//!
//! Every failed record is named, retryable or not: a non-retryable one returns to the
//! queue too, and after the queue's `maxReceiveCount` receives it ends in the dead-letter
//! queue, where it can be looked at, instead of being dropped. Records are handled one
//! after another within the invocation's one deadline; a record not started because the
//! deadline is near (the function's [`Function::deadline_margin`]) is named as failed, so
//! it is received again. From a FIFO queue (an `eventSourceARN` ending in `.fifo`, or a
//! `MessageGroupId` attribute), once a record fails, every later record of the same
//! message group is named as failed without being handled: AWS's rule for keeping a
//! group's order.
//!
//! A malformed envelope (`Records` not an array or empty, a record that is no SQS record
//! or has no `messageId`) cannot be answered record by record: it is a non-retryable
//! error of the whole invocation, naming the field.

use super::function::Function;
use super::HandlerError;
use super::Invocation;
use crate::events::EventError;
use crate::metrics;
use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use tracing::Instrument;

/// The top-level key of Lambda's SQS event (and of no EventBridge event).
pub const RECORDS: &str = "Records";
/// `eventSource` of a record from SQS.
pub const SQS_EVENT_SOURCE: &str = "aws:sqs";
/// The record attribute naming a FIFO message's group.
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";
/// The largest `records` list (as JSON) kept in the response; past it only
/// `batchItemFailures` is answered. Lambda refuses responses above 6 MB, and a refused
/// response fails every record of the batch.
pub const RECORDS_IN_RESPONSE_MAX_BYTES: usize = 1024 * 1024;

/// True when `payload` is Lambda's SQS event (it has a top-level `Records`), however
/// malformed the rest of it is: [`handle_batch`] then names what is wrong.
pub fn is_sqs_event(payload: &Value) -> bool {
    payload.get(RECORDS).is_some()
}

/// Why an SQS event cannot be handled record by record.
#[derive(Debug, thiserror::Error)]
pub enum SqsEnvelopeError {
    /// `Records` is not an array.
    #[error("malformed SQS event: field Records is not an array")]
    RecordsNotArray,
    /// `Records` has no record.
    #[error("malformed SQS event: field Records is empty")]
    NoRecords,
    /// A record does not have the shape of an SQS record.
    #[error("malformed SQS event: field Records[{index}].{path}: {error}")]
    BadRecord {
        /// The record's position in `Records`.
        index: usize,
        /// The offending field's path within the record.
        path: String,
        /// What serde found wrong there.
        #[source]
        error: serde_json::Error,
    },
    /// A record has no `messageId`, by which alone a failure can be reported.
    #[error("malformed SQS event: field Records[{index}].messageId is missing or empty")]
    MissingMessageId {
        /// The record's position in `Records`.
        index: usize,
    },
    /// A record from another event source (S3, SNS, ...).
    #[error(
        "malformed SQS event: field Records[{index}].eventSource is {found:?}, not \"aws:sqs\""
    )]
    NotSqs {
        /// The record's position in `Records`.
        index: usize,
        /// The record's `eventSource`, as sent (empty when absent).
        found: String,
    },
}

/// A bad envelope is refused whatever is retried: counted as a rejected event.
impl From<SqsEnvelopeError> for HandlerError {
    fn from(error: SqsEnvelopeError) -> Self {
        metrics::rejected();
        HandlerError::non_retryable(error)
    }
}

/// One message Lambda reports as failed: it returns to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The failed message's `messageId`.
    pub item_identifier: String,
}

/// What happened to one record of the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum RecordOutcome<O> {
    /// The function handled the record's event (a skip included) and returned `output`.
    Handled {
        /// The record's `messageId`.
        message_id: String,
        /// What the function returned for the event.
        output: O,
    },
    /// The record's body was no event the function takes, or handling it failed.
    Failed {
        /// The record's `messageId`.
        message_id: String,
        /// `Retryable` or `NonRetryable`.
        error_type: String,
        /// The error, with its causes.
        error: String,
    },
    /// The record was not handled: the deadline was near, or an earlier record of its
    /// FIFO message group failed.
    NotStarted {
        /// The record's `messageId`.
        message_id: String,
        /// Why it was not started.
        reason: String,
    },
}

impl<O> RecordOutcome<O> {
    /// The record's `messageId`.
    pub fn message_id(&self) -> &str {
        match self {
            RecordOutcome::Handled { message_id, .. }
            | RecordOutcome::Failed { message_id, .. }
            | RecordOutcome::NotStarted { message_id, .. } => message_id,
        }
    }

    /// True when Lambda is told to deliver the record again.
    pub fn is_failure(&self) -> bool {
        !matches!(self, RecordOutcome::Handled { .. })
    }
}

/// A function's answer to an SQS batch (see the module documentation for its shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutput<O> {
    /// The messages to deliver again, in the order of the batch.
    pub batch_item_failures: Vec<BatchItemFailure>,
    /// Per record, in the order of the batch, what happened.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordOutcome<O>>,
    /// How many record outcomes were left out of `records` to keep the response small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_left_out: Option<usize>,
}

/// One record of the batch, as far as the batch needs it.
struct Record {
    message_id: String,
    body: Option<String>,
    /// `Some` for a FIFO record: its message group (empty when the record names none,
    /// which puts it in one group with every other such record: the safe reading).
    fifo_group: Option<String>,
}

/// Reads and checks the envelope: every record an SQS record with a `messageId`.
fn records(mut payload: Value) -> Result<Vec<Record>, SqsEnvelopeError> {
    let Some(Value::Array(raw)) = payload.get_mut(RECORDS).map(Value::take) else {
        return Err(SqsEnvelopeError::RecordsNotArray);
    };
    if raw.is_empty() {
        return Err(SqsEnvelopeError::NoRecords);
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| {
            let message: SqsMessage = serde_path_to_error::deserialize(value).map_err(|e| {
                SqsEnvelopeError::BadRecord {
                    index,
                    path: e.path().to_string(),
                    error: e.into_inner(),
                }
            })?;
            if message.event_source.as_deref() != Some(SQS_EVENT_SOURCE) {
                return Err(SqsEnvelopeError::NotSqs {
                    index,
                    found: message.event_source.unwrap_or_default(),
                });
            }
            let message_id = message
                .message_id
                .filter(|id| !id.is_empty())
                .ok_or(SqsEnvelopeError::MissingMessageId { index })?;
            let group = message.attributes.get(MESSAGE_GROUP_ID).cloned();
            let fifo = group.is_some()
                || message
                    .event_source_arn
                    .as_deref()
                    .is_some_and(|arn| arn.ends_with(".fifo"));
            Ok(Record {
                message_id,
                body: message.body,
                fifo_group: fifo.then(|| group.unwrap_or_default()),
            })
        })
        .collect()
}

/// The record's body as JSON, refused (non-retryable, counted as rejected) when it is
/// absent, not JSON, or has an object with a key twice.
fn body_event(body: Option<&str>) -> Result<Value, HandlerError> {
    let Some(body) = body else {
        metrics::rejected();
        return Err(HandlerError::non_retryable(
            "the SQS record has no body (it must hold an EventBridge event)",
        ));
    };
    crate::strict_json::from_str(body).map_err(|e| {
        metrics::rejected();
        HandlerError::from(EventError::NotJson(e))
    })
}

/// Handles every record of Lambda's SQS event with `function`, one after another, and
/// answers which ones to deliver again. A malformed envelope is a non-retryable error.
pub async fn handle_batch<F: Function>(
    function: &F,
    payload: Value,
    invocation: &Invocation,
) -> Result<BatchOutput<F::Output>, HandlerError> {
    let records = records(payload)?;
    let mut failed_groups: HashSet<String> = HashSet::new();
    let mut outcomes = Vec::with_capacity(records.len());
    tracing::info!(function = %F::NAME, records = records.len(), "SQS batch received");
    for record in records {
        let span = tracing::info_span!("sqs_record", message_id = %record.message_id);
        let outcome = async {
            let held_back = record
                .fifo_group
                .as_ref()
                .filter(|group| failed_groups.contains(*group));
            let outcome = if let Some(group) = held_back {
                let reason = format!(
                    "an earlier message of FIFO message group {group:?} failed: this one waits \
                     for it, to keep the group's order"
                );
                tracing::warn!(%reason, "SQS record not started");
                RecordOutcome::NotStarted {
                    message_id: record.message_id.clone(),
                    reason,
                }
            } else if invocation
                .stop(function.deadline_margin())
                .is_some_and(|stop| stop.has_passed())
            {
                let reason = format!(
                    "less than {} left before the invocation deadline: delivered again later",
                    humantime::format_duration(function.deadline_margin())
                );
                tracing::warn!(%reason, "SQS record not started");
                RecordOutcome::NotStarted {
                    message_id: record.message_id.clone(),
                    reason,
                }
            } else {
                handle_record(function, &record, invocation).await
            };
            if let (true, Some(group)) = (outcome.is_failure(), &record.fifo_group) {
                failed_groups.insert(group.clone());
            }
            outcome
        }
        .instrument(span)
        .await;
        outcomes.push(outcome);
    }
    Ok(batch_output(outcomes))
}

/// Runs the function on one record's event.
async fn handle_record<F: Function>(
    function: &F,
    record: &Record,
    invocation: &Invocation,
) -> RecordOutcome<F::Output> {
    let message_id = record.message_id.clone();
    let handled = match body_event(record.body.as_deref()) {
        // Boxed, as in `serve`: the handlers' futures are deep.
        Ok(event) => Box::pin(function.handle(event, invocation)).await,
        Err(e) => Err(e),
    };
    match handled {
        Ok(output) => {
            tracing::info!("SQS record handled");
            RecordOutcome::Handled { message_id, output }
        }
        Err(e) => {
            if e.is_retryable() {
                tracing::error!(error = %e, error_type = e.error_type(), "SQS record failed: it is delivered again");
            } else {
                tracing::error!(
                    error = %e,
                    error_type = e.error_type(),
                    "SQS record failed and a retry cannot fix it: it is delivered again until \
                     the queue's maxReceiveCount moves it to the dead-letter queue"
                );
            }
            RecordOutcome::Failed {
                message_id,
                error_type: e.error_type().to_string(),
                error: e.to_string(),
            }
        }
    }
}

/// The failures, and the outcomes when they fit [`RECORDS_IN_RESPONSE_MAX_BYTES`].
fn batch_output<O: Serialize>(records: Vec<RecordOutcome<O>>) -> BatchOutput<O> {
    let batch_item_failures: Vec<BatchItemFailure> = records
        .iter()
        .filter(|r| r.is_failure())
        .map(|r| BatchItemFailure {
            item_identifier: r.message_id().to_string(),
        })
        .collect();
    tracing::info!(
        records = records.len(),
        failures = batch_item_failures.len(),
        "SQS batch done"
    );
    let size = serde_json::to_vec(&records).map_or(usize::MAX, |json| json.len());
    if size > RECORDS_IN_RESPONSE_MAX_BYTES {
        tracing::warn!(
            bytes = size,
            "the per-record outcomes are left out of the response (they are in the log)"
        );
        return BatchOutput {
            batch_item_failures,
            records_left_out: Some(records.len()),
            records: Vec::new(),
        };
    }
    BatchOutput {
        batch_item_failures,
        records,
        records_left_out: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::{handle_payload, FunctionName, FunctionResponse};
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    /// A stand-in function, not a mock of a server: what this file decides is which
    /// records reach `handle` and what is answered for them, which a function that
    /// records the events it gets shows directly. The real handlers on SQS batches run in
    /// tests/it/sqs_records.rs and in the indexer's Runtime API test.
    ///
    /// Its events are `{"n": N}`, optionally with `"fail": "retryable" | "permanent"`, or
    /// `"use-up-time": true` (its deadline margin becomes a day: no later record starts).
    struct Recorder {
        seen: Mutex<Vec<u64>>,
        margin_secs: AtomicU64,
    }

    impl Recorder {
        fn new() -> Self {
            Self {
                seen: Mutex::new(Vec::new()),
                margin_secs: AtomicU64::new(30),
            }
        }

        fn seen(&self) -> Vec<u64> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Function for Recorder {
        const NAME: FunctionName = FunctionName::SociIndexer;
        type Output = u64;

        async fn from_env() -> Result<Self, HandlerError> {
            Ok(Self::new())
        }

        async fn handle(&self, event: Value, _: &Invocation) -> Result<u64, HandlerError> {
            let n = event["n"]
                .as_u64()
                .ok_or_else(|| HandlerError::non_retryable(format!("no n in {event}")))?;
            self.seen.lock().unwrap().push(n);
            if event["use-up-time"] == true {
                self.margin_secs.store(86_400, Ordering::SeqCst);
            }
            match event["fail"].as_str() {
                Some("retryable") => Err(HandlerError::retryable(format!("event {n}: throttled"))),
                Some("permanent") => Err(HandlerError::non_retryable(format!("event {n}: bad"))),
                _ => Ok(n),
            }
        }

        fn deadline_margin(&self) -> Duration {
            Duration::from_secs(self.margin_secs.load(Ordering::SeqCst))
        }
    }

    /// A standard-queue record with `body` as its text.
    fn record(id: &str, body: &str) -> Value {
        json!({"messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1800000000000"},
            "messageAttributes": {"afterpush-target": {"stringValue": "indexer",
                "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
            "md5OfBody": "0", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:afterpush-indexer",
            "awsRegion": "us-east-1"})
    }

    /// A record of a FIFO queue in message group `group`.
    fn fifo_record(id: &str, group: &str, body: &str) -> Value {
        let mut r = record(id, body);
        r["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:afterpush-indexer.fifo".into();
        r["attributes"][MESSAGE_GROUP_ID] = group.into();
        r
    }

    fn event(records: Vec<Value>) -> Value {
        json!({ "Records": records })
    }

    async fn batch(f: &Recorder, payload: Value, inv: &Invocation) -> BatchOutput<u64> {
        handle_payload(f, payload, inv)
            .await
            .unwrap()
            .into_batch()
            .expect("an SQS event gets a batch answer")
    }

    fn failures(out: &BatchOutput<u64>) -> Vec<&str> {
        out.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    fn statuses(out: &BatchOutput<u64>) -> Vec<String> {
        out.records
            .iter()
            .map(|r| {
                serde_json::to_value(r).unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_sqs_event_goes_record_by_record_and_an_eventbridge_event_directly() {
        let f = Recorder::new();
        let inv = Invocation::default();
        let direct = handle_payload(&f, json!({"n": 7}), &inv).await.unwrap();
        assert_eq!(direct.clone().into_event(), Some(7));
        // Serialised as the function's own output, nothing around it.
        assert_eq!(serde_json::to_value(&direct).unwrap(), json!(7));

        let sqs = event(vec![
            record("m1", r#"{"n":1}"#),
            record("m2", r#"{"n":2}"#),
            record("m3", r#"{"n":3}"#),
        ]);
        assert!(is_sqs_event(&sqs) && !is_sqs_event(&json!({"n": 7})));
        let out = batch(&f, sqs, &inv).await;
        assert_eq!(f.seen(), [7, 1, 2, 3]);
        assert!(out.batch_item_failures.is_empty());
        let answer = serde_json::to_value(FunctionResponse::Batch(out)).unwrap();
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        assert_eq!(
            answer["records"][1],
            json!({"status": "handled", "messageId": "m2", "output": 2}),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn failed_records_are_named_retryable_or_not_and_the_rest_still_run() {
        let f = Recorder::new();
        let out = batch(
            &f,
            event(vec![
                record("m1", r#"{"n":1}"#),
                record("m2", r#"{"n":2,"fail":"retryable"}"#),
                record("m3", r#"{"n":3,"fail":"permanent"}"#),
                record("m4", r#"{"n":4}"#),
            ]),
            &Invocation::default(),
        )
        .await;
        assert_eq!(f.seen(), [1, 2, 3, 4], "a standard queue keeps no order");
        assert_eq!(failures(&out), ["m2", "m3"]);
        let answer = serde_json::to_value(&out).unwrap();
        assert_eq!(
            answer["batchItemFailures"],
            json!([{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}])
        );
        assert_eq!(
            answer["records"][1],
            json!({"status": "failed", "messageId": "m2", "errorType": "Retryable",
                "error": "event 2: throttled"})
        );
        assert_eq!(answer["records"][2]["errorType"], "NonRetryable");
        // The answer reads back as the same type.
        let back: BatchOutput<u64> = serde_json::from_value(answer).unwrap();
        assert_eq!(back.batch_item_failures, out.batch_item_failures);
        assert_eq!(statuses(&back), ["handled", "failed", "failed", "handled"]);
    }

    #[tokio::test]
    async fn after_a_failure_the_rest_of_its_fifo_group_waits_other_groups_go_on() {
        let f = Recorder::new();
        let out = batch(
            &f,
            event(vec![
                fifo_record("a1", "a", r#"{"n":1}"#),
                fifo_record("b1", "b", r#"{"n":2}"#),
                fifo_record("a2", "a", r#"{"n":3,"fail":"retryable"}"#),
                fifo_record("b2", "b", r#"{"n":4}"#),
                fifo_record("a3", "a", r#"{"n":5}"#),
                // A body that is no JSON fails its record: group c waits after it too.
                fifo_record("c1", "c", "not json"),
                fifo_record("c2", "c", r#"{"n":7}"#),
            ]),
            &Invocation::default(),
        )
        .await;
        assert_eq!(f.seen(), [1, 2, 3, 4], "a3 and c2 must not run");
        assert_eq!(failures(&out), ["a2", "a3", "c1", "c2"]);
        let answer = serde_json::to_value(&out).unwrap();
        assert_eq!(answer["records"][4]["status"], "not-started", "{answer}");
        assert!(
            answer["records"][4]["reason"]
                .as_str()
                .unwrap()
                .contains("group \"a\""),
            "{answer}"
        );

        // A MessageGroupId alone makes a record FIFO; a standard queue's records run on.
        let f = Recorder::new();
        let mut grouped = vec![
            record("x1", r#"{"n":1,"fail":"permanent"}"#),
            record("x2", r#"{"n":2}"#),
        ];
        for r in &mut grouped {
            r["attributes"][MESSAGE_GROUP_ID] = "g".into();
        }
        let out = batch(&f, event(grouped), &Invocation::default()).await;
        assert_eq!((f.seen(), failures(&out)), (vec![1], vec!["x1", "x2"]));
        let f = Recorder::new();
        let standard = vec![
            record("s1", r#"{"n":1,"fail":"permanent"}"#),
            record("s2", r#"{"n":2}"#),
        ];
        let out = batch(&f, event(standard), &Invocation::default()).await;
        assert_eq!((f.seen(), failures(&out)), (vec![1, 2], vec!["s1"]));

        // A FIFO queue's record that names no group: one group with all such records.
        let f = Recorder::new();
        let mut no_group = vec![
            fifo_record("f1", "", r#"{"n":1,"fail":"retryable"}"#),
            fifo_record("f2", "", r#"{"n":2}"#),
        ];
        for r in &mut no_group {
            r["attributes"]
                .as_object_mut()
                .unwrap()
                .remove(MESSAGE_GROUP_ID);
        }
        let out = batch(&f, event(no_group), &Invocation::default()).await;
        assert_eq!((f.seen(), failures(&out)), (vec![1], vec!["f1", "f2"]));
    }

    #[tokio::test]
    async fn a_malformed_envelope_is_a_non_retryable_error_naming_the_field() {
        let mut no_id = record("m2", r#"{"n":2}"#);
        no_id.as_object_mut().unwrap().remove("messageId");
        let mut empty_id = record("m2", r#"{"n":2}"#);
        empty_id["messageId"] = "".into();
        let mut s3 = record("m2", r#"{"n":2}"#);
        s3["eventSource"] = "aws:s3".into();
        let mut no_source = record("m2", r#"{"n":2}"#);
        no_source.as_object_mut().unwrap().remove("eventSource");
        let mut bad_body = record("m2", "");
        bad_body["body"] = json!({"n": 2});
        let first = record("m1", r#"{"n":1}"#);
        let cases = [
            (
                json!({"Records": {"messageId": "m1"}}),
                "field Records is not an array",
            ),
            (json!({"Records": null}), "field Records is not an array"),
            (json!({"Records": []}), "field Records is empty"),
            (
                event(vec![first.clone(), no_id]),
                "Records[1].messageId is missing",
            ),
            (
                event(vec![first.clone(), empty_id]),
                "Records[1].messageId is missing",
            ),
            (
                event(vec![first.clone(), s3]),
                "Records[1].eventSource is \"aws:s3\"",
            ),
            (
                event(vec![first.clone(), no_source]),
                "Records[1].eventSource is \"\"",
            ),
            (event(vec![first.clone(), bad_body]), "Records[1].body:"),
            (event(vec![first, json!("m2")]), "Records[1]."),
        ];
        for (payload, expected) in cases {
            let f = Recorder::new();
            let err = handle_payload(&f, payload.clone(), &Invocation::default())
                .await
                .unwrap_err();
            assert!(!err.is_retryable(), "{err}");
            assert!(
                err.to_string().contains(expected),
                "{expected:?} in {err}\n{payload}"
            );
            // Refused as a whole: not even the good first record ran.
            assert_eq!(f.seen(), Vec::<u64>::new(), "{payload}");
        }
    }

    #[tokio::test]
    async fn a_body_with_a_key_twice_fails_that_record_only() {
        let f = Recorder::new();
        let mut no_body = record("m4", "");
        no_body.as_object_mut().unwrap().remove("body");
        let out = batch(
            &f,
            event(vec![
                record("m1", r#"{"n":1}"#),
                record("m2", r#"{"n":2,"n":20}"#),
                record("m3", r#"{"n":3}"#),
                no_body,
            ]),
            &Invocation::default(),
        )
        .await;
        assert_eq!(f.seen(), [1, 3]);
        assert_eq!(failures(&out), ["m2", "m4"]);
        let answer = serde_json::to_value(&out).unwrap();
        let error = answer["records"][1]["error"].as_str().unwrap();
        assert!(error.contains("duplicate key \"n\""), "{answer}");
        assert_eq!(answer["records"][1]["errorType"], "NonRetryable");
        assert!(
            answer["records"][3]["error"]
                .as_str()
                .unwrap()
                .contains("no body"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn records_without_time_left_are_not_started_and_delivered_again() {
        let in_an_hour = Invocation {
            deadline: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Invocation::default()
        };
        // The first record leaves the function a day's margin: the deadline is then near
        // for every later one, which is named for delivery again without being run.
        let f = Recorder::new();
        let out = batch(
            &f,
            event(vec![
                record("m1", r#"{"n":1}"#),
                record("m2", r#"{"n":2,"use-up-time":true}"#),
                record("m3", r#"{"n":3}"#),
                record("m4", r#"{"n":4}"#),
            ]),
            &in_an_hour,
        )
        .await;
        assert_eq!(f.seen(), [1, 2]);
        assert_eq!(failures(&out), ["m3", "m4"]);
        assert_eq!(
            statuses(&out),
            ["handled", "handled", "not-started", "not-started"]
        );
        let answer = serde_json::to_value(&out).unwrap();
        assert!(
            answer["records"][2]["reason"]
                .as_str()
                .unwrap()
                .contains("invocation deadline"),
            "{answer}"
        );
        // A deadline already inside the margin: nothing starts.
        let f = Recorder::new();
        let soon = Invocation {
            deadline: Some(SystemTime::now() + Duration::from_secs(5)),
            ..Invocation::default()
        };
        let out = batch(&f, event(vec![record("m1", r#"{"n":1}"#)]), &soon).await;
        assert_eq!((f.seen(), failures(&out)), (vec![], vec!["m1"]));
    }

    #[test]
    fn outcomes_too_large_for_a_response_are_left_out_the_failures_stay() {
        let big = "x".repeat(RECORDS_IN_RESPONSE_MAX_BYTES);
        let records = vec![
            RecordOutcome::Handled {
                message_id: "m1".to_string(),
                output: big,
            },
            RecordOutcome::NotStarted {
                message_id: "m2".to_string(),
                reason: "deadline".to_string(),
            },
        ];
        let out = batch_output(records);
        let answer = serde_json::to_value(&out).unwrap();
        assert_eq!(
            answer,
            json!({"batchItemFailures": [{"itemIdentifier": "m2"}], "recordsLeftOut": 2})
        );
    }
}
