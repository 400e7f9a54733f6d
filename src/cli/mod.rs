//! Subcommands of the `memocache` command that need more than a few lines: one module each.

pub mod checkpoint;
pub mod demo;
pub mod lock;
pub mod replay;
pub mod transcribe;

/// [`std::fs::create_dir_all`], with a path that exists as something other than a directory
/// (a file) said so: the error was "File exists (os error 17)", which reads as if the
/// directory were there and the command had refused it.
pub fn create_dir_all(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists && !dir.is_dir() {
            std::io::Error::new(e.kind(), "it exists and is not a directory")
        } else {
            e
        }
    })
}
