//! Subcommands of the `memocache` command that need more than a few lines: one module each.

pub mod demo;
pub mod replay;
pub mod transcribe;
