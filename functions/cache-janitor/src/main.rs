//! The cache janitor Lambda: ECR and BuildKit cache cleanup after pushes and on schedule,
//! keeping every image ECS or Lambda uses.
//!
//! [`afterpush::lambda::serve`] sets up tracing, metrics, settings and clients once per
//! cold start; every event then goes to [`afterpush::lambda::CacheJanitor`], which returns a typed
//! outcome or an error typed retryable/non-retryable for EventBridge's retries.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    afterpush::lambda::serve::<afterpush::lambda::CacheJanitor>().await
}
