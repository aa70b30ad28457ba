//! What every Lambda function shares, whatever event it takes.
//!
//! - [`handlers`] and [`janitor`] — the three handlers as library structs ([`SociIndexer`],
//!   [`ManifestStitcher`], [`CacheJanitor`]), each a [`Function`]; every binary in
//!   `functions/` is [`serve`] of one of them, and `afterpush invoke` and the demo call
//!   them in-process.
//! - [`outputs`] — what they return, typed ([`IndexerOutput`], [`StitcherOutput`],
//!   [`JanitorOutput`]), serialised only at the boundary.
//! - [`Invocation`] — the invocation's deadline and the function's own account and
//!   region ([`Home`]), which events must name.
//! - [`HandlerError`] — a handler's error, retryable or not, as a Lambda `Diagnostic`
//!   (its message is [`crate::format::cause_chain`]);
//! - [`handle_payload`] — the one entry for a payload, in Lambda and in `afterpush
//!   invoke`: an EventBridge event, or Lambda's SQS event whose records carry them
//!   ([`sqs_batch`]: partial batch failures);
//! - [`init_tracing`] — JSON logs in Lambda, human logs elsewhere; [`init_cli_tracing`]
//!   for the CLI.

mod function;
mod handler_error;
pub mod handlers;
mod invocation;
pub mod janitor;
pub mod janitor_fan_out;
mod janitor_settings;
mod logging;
pub mod outputs;
pub mod reconciler;
mod serve;
pub mod sqs_batch;

pub use function::Function;
pub use handler_error::HandlerError;
pub use handlers::{ManifestStitcher, Repositories, SociIndexer, ENV_LAYOUT};
pub use invocation::{Home, Invocation};
pub use janitor::{CacheJanitor, JanitorEvent, JanitorSettings};
pub use logging::{init_cli_tracing, init_tracing, LogFormat, LogSettings};
pub use outputs::{
    DecisionRecord, FunctionName, IndexerOutput, JanitorOutput, PushOutput, StitcherOutput,
};
pub use reconciler::{ReconcileMode, Reconciler, ReconcilerOutput};
pub use serve::{handle_payload, serve, FunctionResponse};
pub use sqs_batch::{BatchItemFailure, BatchOutput, RecordOutcome};
