//! Subcommands of the `memocache` command that need more than a few lines: one module each.

pub mod checkpoint;
pub mod demo;
pub mod lock;
pub mod replay;
pub mod transcribe;
