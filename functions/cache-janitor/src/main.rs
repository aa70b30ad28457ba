//! Lambda `cache-janitor`: ECR and BuildKit cache cleanup after pushes and on schedule,
//! keeping every image ECS or Lambda uses.
//!
//! Thin by design: tracing, settings and clients are set up once per cold start, then
//! every event goes to [`afterpush::lambda::CacheJanitor::handle`], which returns a JSON
//! outcome or an error typed retryable/non-retryable for EventBridge's retries.

use afterpush::lambda::{self, CacheJanitor, HandlerError, Invocation};
use afterpush::metrics::Emitter;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

async fn handle(
    event: LambdaEvent<Value>,
    function: &CacheJanitor,
    metrics: &Emitter,
) -> Result<Value, HandlerError> {
    tracing::info!(request_id = %event.context.request_id, "event received");
    let invocation = Invocation::with_deadline_ms(event.context.deadline);
    let outcome = function.handle(event.payload, &invocation).await;
    metrics.flush();
    outcome
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let metrics = Emitter::install("cache-janitor")?;
    // Bad settings fail the cold start with a message naming the variable.
    let function = CacheJanitor::from_env().await.map_err(|e| {
        tracing::error!(error = %e, "invalid settings");
        e
    })?;
    let (function, metrics) = (&function, &metrics);
    lambda_runtime::run(service_fn(move |event| handle(event, function, metrics))).await
}
