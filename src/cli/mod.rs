//! Subcommands of the `memocache` command that need more than a few lines: one module each.

pub mod checkpoint;
pub mod demo;
pub mod lock;
pub mod number;
pub mod replay;
pub mod transcribe;

use std::ffi::{OsStr, OsString};

use clap::error::{ContextKind, ContextValue};

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

/// The usage error of an option that lets values start with a hyphen (the numeric ones, so
/// that `-5` is refused as a negative number) but is followed by no value: by nothing, by `--`,
/// by a long option (`--dry-run`, any `--` and a letter) or by one of the subcommand's short
/// options (`-h`). clap takes whatever follows such an option as its value, so `replay t
/// --capacity --format arc` reported `--format` as a bad number (or, with the word after it
/// left over, an unexpected argument `arc`), where an option of any other kind says it needs
/// a value. The error is clap's own for a missing value, so both read alike. `args` is the
/// whole command line, the program's name first.
pub fn missing_value(command: &mut clap::Command, args: &[OsString]) -> Option<clap::Error> {
    command.build();
    let name = args.get(1)?.to_str()?;
    let sub = command.find_subcommand(name)?;
    let words = &args[2..];
    for (i, word) in words.iter().enumerate() {
        if word == "--" {
            // Every word after it is positional.
            return None;
        }
        let Some(long) = word.to_str().and_then(|w| w.strip_prefix("--")) else {
            continue;
        };
        let Some(arg) = sub
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long) && arg.is_allow_hyphen_values_set())
        else {
            continue;
        };
        if words.get(i + 1).is_none_or(|next| is_option(sub, next)) {
            let value_name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
            let mut error = clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(sub);
            error.insert(
                ContextKind::InvalidArg,
                ContextValue::String(format!("--{long} <{value_name}>")),
            );
            // An empty value is what clap reports as none supplied.
            error.insert(
                ContextKind::InvalidValue,
                ContextValue::String(String::new()),
            );
            return Some(error);
        }
    }
    None
}

/// Whether `word` is an option rather than a value: `--`, `--` and a letter, or a short
/// option of `command`. A negative number (`-5`, `-.5`) is a value.
fn is_option(command: &clap::Command, word: &OsStr) -> bool {
    let bytes = word.as_encoded_bytes();
    match bytes {
        [b'-', b'-'] => true,
        [b'-', b'-', letter, ..] => letter.is_ascii_alphabetic(),
        [b'-', short] => command
            .get_arguments()
            .any(|arg| arg.get_short() == Some(char::from(*short))),
        _ => false,
    }
}

/// `text` from outside the program (an engine's output, a file name, an error quoting a path)
/// made safe to print: control characters (`\n`, `\r`, ESC as `\u{1b}`), line separators and
/// the bidirectional overrides are escaped, other text is kept as is. Printed raw, an ESC
/// sequence in a transcript or a file name rewrote the user's terminal (cleared it, moved the
/// cursor, set its title), a `\r` or a newline forged a line of the command's own, and a
/// right-to-left override made a name read backwards.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        push_printable(&mut shown, c);
    }
    shown
}

fn push_printable(shown: &mut String, c: char) {
    let invisible = matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    );
    if c.is_control() || invisible {
        shown.extend(c.escape_default());
    } else {
        shown.push(c);
    }
}

/// A path for printing: [`printable`], and a name that is not valid UTF-8 shows each stray
/// byte as `\xNN`. `Path::display` put U+FFFD in their place, so two names differing only
/// there printed alike and neither could be typed back. A backslash is doubled, so that a
/// name spelling `\xff` does not print as the byte 0xff does. (Engine text keeps its
/// backslashes: it has no stray bytes to tell apart.)
pub fn shown(path: &std::path::Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut shown = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                shown.push_str("\\\\");
            } else {
                push_printable(&mut shown, c);
            }
        }
        for byte in chunk.invalid() {
            shown.push_str(&format!("\\x{byte:02x}"));
        }
    }
    shown
}

/// The last component of `path` (the whole path if it has none, as `..`), [`shown`].
pub fn file_name(path: &std::path::Path) -> String {
    shown(path.file_name().map_or(path, std::path::Path::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(
            printable("caf\u{e9} \u{65e5}\u{672c}"),
            "caf\u{e9} \u{65e5}\u{672c}"
        );
        assert_eq!(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(printable("\u{1b}[2J\u{7}\u{9b}"), "\\u{1b}[2J\\u{7}\\u{9b}");
        assert_eq!(printable("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(printable("\u{2028}"), "\\u{2028}");
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_shows_its_bytes() {
        use std::os::unix::ffi::OsStrExt as _;
        let odd = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/a/b\xff\xfec\x1b.wav"));
        assert_eq!(shown(odd), "/a/b\\xff\\xfec\\u{1b}.wav");
        // A name that spells the escape prints apart from the byte it spells.
        let spelled = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/a/b\\xff.wav"));
        assert_eq!(shown(spelled), "/a/b\\\\xff.wav");
        assert_ne!(
            shown(spelled),
            shown(std::path::Path::new(std::ffi::OsStr::from_bytes(
                b"/a/b\xff.wav"
            )))
        );
        assert_eq!(file_name(odd), "b\\xff\\xfec\\u{1b}.wav");
        // Not the same as a name holding U+FFFD, as `Path::display` made it.
        let replacement = std::path::Path::new("/a/b\u{fffd}\u{fffd}c.wav");
        assert_ne!(file_name(odd), file_name(replacement));
        assert_eq!(file_name(std::path::Path::new("..")), "..");
    }
}
