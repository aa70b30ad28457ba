//! The reconciler Lambda: on its schedule, surveys the registry for SOCI indexes and
//! stitched tags the other functions never made (pushes before afterpush, lost events,
//! changed settings), reports them and, in `enqueue` mode, queues the work.
//!
//! [`afterpush::lambda::serve`] sets up tracing, metrics, settings and clients once per
//! cold start; every event then goes to [`afterpush::lambda::Reconciler`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    afterpush::lambda::serve::<afterpush::lambda::Reconciler>().await
}
