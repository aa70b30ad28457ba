//! Rust code that `flatc --rust` generated from the zTOC schemas in `src/ztoc/schema/`
//! (`ztoc.fbs`, `zinfo.fbs`). Do not edit the `*_generated.rs` files: change a schema and
//! run `scripts/generate-flatbuffers` (it installs the flatc release matching the
//! `flatbuffers` crate and rewrites both files; `--check` compares instead).

#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    deprecated,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    unused_imports,
    rustdoc::all
)]
#[rustfmt::skip]
mod zinfo_generated;
#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    deprecated,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    unused_imports,
    rustdoc::all
)]
#[rustfmt::skip]
mod ztoc_generated;

pub(crate) use zinfo_generated::zinfo;
pub(crate) use ztoc_generated::ztoc;
