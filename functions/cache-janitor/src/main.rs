//! Lambda `cache-janitor`: BuildKit cache cleanup after cache-tag pushes and on schedule.
//!
//! For now the handler only decides (sweep, prune after a push, or skip) and returns the
//! decision as JSON; the cleanup library call replaces the body of `handle` when it lands.
//! The runtime loop, logging, settings and error mapping are the real ones.

use afterpush::events::{self, HandlerError, RepositoryTagFilters, Trigger};
use afterpush::settings::{self, ProcessEnv};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

/// Settings read once per cold start.
struct Deps {
    filters: RepositoryTagFilters,
    soci_tag_suffix: String,
}

impl Deps {
    fn from_env() -> Result<Self, HandlerError> {
        let env = ProcessEnv;
        Ok(Self {
            filters: settings::value_or_default(&env, settings::REPOSITORY_TAG_FILTERS).parse()?,
            soci_tag_suffix: settings::value_or_default(&env, settings::SOCI_TAG_SUFFIX),
        })
    }
}

async fn handle(event: LambdaEvent<Value>, deps: &Deps) -> Result<Value, HandlerError> {
    let trigger = Trigger::from_value(event.payload)?;
    let decision = events::janitor_decision(&trigger, &deps.filters, &deps.soci_tag_suffix);
    let json = serde_json::to_value(&decision).map_err(HandlerError::non_retryable)?;
    tracing::info!(
        request_id = %event.context.request_id,
        trigger = trigger.kind(),
        decision = %json,
        "cache-janitor decision"
    );
    Ok(json)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    events::init_tracing();
    // Bad settings fail the cold start with a message naming the variable.
    let deps = Deps::from_env().map_err(|e| {
        tracing::error!(error = %e, "invalid settings");
        e
    })?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event| handle(event, deps))).await
}
