//! Subcommands of the `memocache` command that need more than a few lines: one module each.

pub mod checkpoint;
pub mod demo;
pub mod lock;
pub mod number;
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
