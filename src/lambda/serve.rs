//! One shape for the three function binaries: a [`Function`] is built once per cold
//! start and handles every event; [`serve`] runs it in the `lambda_runtime` loop, with
//! tracing, the metrics emitter and a flush of the metrics after every invocation.
//!
//! Every payload goes through [`handle_payload`], the one entry `serve` and `afterpush
//! invoke` share: an EventBridge event goes to [`Function::handle`] and its typed output
//! is the answer; Lambda's SQS event (records carrying EventBridge events) goes to
//! [`super::sqs_batch`], record by record, and the answer is a partial batch response.

use super::function::Function;
use super::sqs_batch::{self, BatchOutput};
use super::{init_tracing, HandlerError, Invocation};
use crate::events::EventError;
use crate::metrics::{self, Emitter};
use lambda_runtime::{service_fn, LambdaEvent};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A function's answer to one payload.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FunctionResponse<O> {
    /// For an EventBridge event: the function's own output, as [`Function::handle`]
    /// returns it.
    Event(O),
    /// For Lambda's SQS event: which records to deliver again, and what happened to each.
    Batch(BatchOutput<O>),
}

impl<O> FunctionResponse<O> {
    /// The output of a direct event; `None` for a batch.
    pub fn into_event(self) -> Option<O> {
        match self {
            FunctionResponse::Event(output) => Some(output),
            FunctionResponse::Batch(_) => None,
        }
    }

    /// The answer to an SQS batch; `None` for a direct event.
    pub fn into_batch(self) -> Option<BatchOutput<O>> {
        match self {
            FunctionResponse::Batch(batch) => Some(batch),
            FunctionResponse::Event(_) => None,
        }
    }
}

/// Handles one payload, read as JSON: Lambda's SQS event record by record
/// ([`sqs_batch::handle_batch`]), anything else as one EventBridge event.
pub async fn handle_payload<F: Function>(
    function: &F,
    payload: Value,
    invocation: &Invocation,
) -> Result<FunctionResponse<F::Output>, HandlerError> {
    if sqs_batch::is_sqs_event(&payload) {
        let batch = sqs_batch::handle_batch(function, payload, invocation).await?;
        Ok(FunctionResponse::Batch(batch))
    } else {
        let output = Box::pin(function.handle(payload, invocation)).await?;
        Ok(FunctionResponse::Event(output))
    }
}

/// Runs `F` in the `lambda_runtime` loop until the runtime stops it. Bad settings fail
/// the cold start with a message naming the variable.
pub async fn serve<F: Function>() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let metrics = Emitter::install(F::NAME.binary())?;
    let function = F::from_env().await.inspect_err(|e| {
        tracing::error!(error = %e, "invalid settings");
    })?;
    let (function, metrics) = (&function, &metrics);
    // The payload arrives as its raw text: serde_json's own Value would keep the last of
    // duplicate keys, so it is read here with crate::strict_json, which refuses them.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            tracing::info!(request_id = %event.context.request_id, "event received");
            let outcome = match (
                Invocation::from_context(&event.context),
                strict_payload(&event.payload),
            ) {
                // Boxed: the handlers' futures are deep enough to exceed the compiler's
                // query depth limit when nested inline in the runtime's.
                (Ok(invocation), Ok(payload)) => {
                    Box::pin(handle_payload(function, payload, &invocation)).await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            metrics.flush();
            outcome
        },
    ))
    .await
}

/// The payload as JSON, refused (non-retryable, counted as rejected) when an object in
/// it has the same key twice.
pub fn strict_payload(payload: &RawValue) -> Result<Value, HandlerError> {
    crate::strict_json::from_str(payload.get()).map_err(|e| {
        metrics::rejected();
        HandlerError::from(EventError::NotJson(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_with_duplicate_keys_are_refused() {
        let raw = |text: &str| RawValue::from_string(text.to_string()).unwrap();
        let push = r#"{"source":"aws.ecr","detail-type":"ECR Image Action","account":"123456789012","region":"us-east-1","detail":{"repository-name":"app","repository-name":"other"}}"#;
        let err = strict_payload(&raw(push)).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("duplicate key"), "{err}");
        let ok = r#"{"source":"aws.events","detail-type":"Scheduled Event","detail":{}}"#;
        assert_eq!(strict_payload(&raw(ok)).unwrap()["source"], "aws.events");
    }
}
