//! One shape for the three function binaries: a [`Function`] is built once per cold
//! start and handles every event; [`serve`] runs it in the `lambda_runtime` loop, with
//! tracing, the metrics emitter and a flush of the metrics after every invocation.

use super::{init_tracing, FunctionName, HandlerError, Invocation};
use crate::metrics::Emitter;
use lambda_runtime::{service_fn, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;

/// A Lambda function's handler, as a library type.
pub trait Function: Sized {
    /// Which function this is.
    const NAME: FunctionName;
    /// What [`Function::handle`] returns, serialised by the runtime.
    type Output: Serialize;

    /// Settings and clients from the environment, once per cold start.
    fn from_env() -> impl Future<Output = Result<Self, HandlerError>>;

    /// Handles one event.
    fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> impl Future<Output = Result<Self::Output, HandlerError>>;
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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        tracing::info!(request_id = %event.context.request_id, "event received");
        let invocation = Invocation::from_context(&event.context);
        // Boxed: the handlers' futures are deep enough to exceed the compiler's query
        // depth limit when nested inline in the runtime's.
        let outcome = Box::pin(function.handle(event.payload, &invocation)).await;
        metrics.flush();
        outcome
    }))
    .await
}
