//! The SOCI indexer Lambda: builds SOCI indexes for every pushed image.
//!
//! [`afterpush::lambda::serve`] sets up tracing, metrics, settings and clients once per
//! cold start; every event then goes to [`afterpush::lambda::SociIndexer`], which returns a typed
//! outcome or an error typed retryable/non-retryable for EventBridge's retries.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    afterpush::lambda::serve::<afterpush::lambda::SociIndexer>().await
}
