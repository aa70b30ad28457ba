//! A first verdict on one image, before the safety closure: [`super::verdict`] gives
//! them, [`super::graph`] closes over them and [`super::assemble`] turns them into the plan.

/// A first verdict, before the closure.
#[derive(Debug, Clone)]
pub(super) enum Verdict {
    Keep {
        rule: Option<String>,
        reason: String,
        /// `rule` would delete the image; the images in use keep it.
        overridden: bool,
    },
    Delete {
        rule: String,
        reason: String,
    },
    /// No rule matched a dependant: kept exactly when what it depends on is kept.
    Follow,
}
