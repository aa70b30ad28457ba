//! The shape every function's handler has: built once per cold start, then called for
//! each event ([`super::serve`] runs it in the runtime loop, [`super::sqs_batch`] calls it
//! once per SQS record).

use super::{FunctionName, HandlerError, Invocation};
use crate::deadline;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

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

    /// How long before the invocation deadline the function starts no more work; an SQS
    /// batch starts no record after it. [`deadline::DEFAULT_DEADLINE_MARGIN`] unless the
    /// function has its own.
    fn deadline_margin(&self) -> Duration {
        deadline::DEFAULT_DEADLINE_MARGIN
    }
}
