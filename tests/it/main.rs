//! The root package's integration tests, as modules of one test binary: each former
//! test binary linked the whole AWS SDK, which was most of the suite's build time and
//! disk. Run one file's tests with `cargo test --test it soci::` (the module is the
//! file's name).
//!
//! Kept apart, each in a binary of its own under `tests/`:
//! - `registry_ecr_env.rs` sets process environment variables (`std::env::set_var`),
//!   which every other test in the same process would see.
//! - `registry_big_blob.rs` bounds the peak RSS of the test process itself, which other
//!   tests running beside it would raise.
//!
//! The functions' Runtime API tests (`functions/*/tests/lambda_runtime.rs`) stay in their
//! packages: they run each function's bootstrap through `CARGO_BIN_EXE_<name>`, which
//! cargo sets (and builds the binary first) only for the tests of the package that owns
//! the binary.

#[path = "../support/mod.rs"]
mod support;
#[path = "../ztoc_util/mod.rs"]
mod ztoc_util;

mod cleanup_cli;
mod cleanup_ecr;
mod cleanup_ecr_aws_faults;
mod cleanup_ecr_lifecycle;
mod cleanup_fan_out;
mod cleanup_in_use;
mod cleanup_manifest_cache;
mod cleanup_org;
mod cleanup_s3;
mod cleanup_s3_aws_faults;
mod copy;
mod copy_registry;
mod deadlines;
mod demo;
mod events;
mod invoke;
mod layout;
mod moto_digest;
mod moto_in_use;
mod moto_inspector;
mod reconcile;
mod reconcile_e2e;
mod reconcile_ecr;
mod reconcile_queue;
mod reconcile_throttling;
mod registry_bounds;
mod registry_ecr_token_faults;
mod registry_http;
mod sam_local;
mod scripts;
mod soci;
mod soci_memory;
mod sqs_records;
mod stitch_layout;
mod stitch_registry;
mod template;
mod template_checkov;
mod template_in_use;
mod template_queues;
mod ztoc_errors;
mod ztoc_format;
mod ztoc_fuzz;
mod ztoc_memory;
mod ztoc_prop;
mod ztoc_tools;
