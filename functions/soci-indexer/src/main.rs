//! Lambda `soci-indexer`: builds SOCI indexes for every pushed image.
//!
//! Thin by design: tracing, settings and clients are set up once per cold start, then
//! every event goes to [`afterpush::functions::SociIndexer::handle`], which returns a JSON
//! outcome or an error typed retryable/non-retryable for EventBridge's retries.

use afterpush::events::{self, HandlerError};
use afterpush::functions::{Invocation, SociIndexer};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

async fn handle(event: LambdaEvent<Value>, function: &SociIndexer) -> Result<Value, HandlerError> {
    tracing::info!(request_id = %event.context.request_id, "event received");
    let invocation = Invocation::with_deadline_ms(event.context.deadline);
    function.handle(event.payload, &invocation).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    events::init_tracing();
    // Bad settings fail the cold start with a message naming the variable.
    let function = SociIndexer::from_env().await.map_err(|e| {
        tracing::error!(error = %e, "invalid settings");
        e
    })?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event| handle(event, function))).await
}
