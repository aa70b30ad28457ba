//! See the module docs in ARCHITECTURE.md; filled in by its issue.
