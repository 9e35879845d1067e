//! The one error type of trace handling: every variant names the file, and
//! where it applies the line and the field, and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The I/O error's message is part of this one's (and it is not
    /// chained as a source, so a report prints it once).
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        field: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl TraceError {
    pub fn io(path: &Path, error: std::io::Error) -> TraceError {
        TraceError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub fn invalid(path: &Path, line: u64, field: &str, message: impl Into<String>) -> TraceError {
        TraceError::Invalid {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn file(path: &Path, message: impl Into<String>) -> TraceError {
        TraceError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Longest piece of input an error message quotes whole (characters).
const QUOTE_CHARS: usize = 64;

/// Input text as an error message quotes it: whole when short, otherwise
/// its first [`QUOTE_CHARS`] characters and how long it really is, so one
/// huge field cannot flood a terminal or a log.
pub fn quote(text: &str) -> String {
    shorten(text, QUOTE_CHARS)
}

/// `text` cut to its first `max_chars` characters, saying how long it was.
pub fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_quoted_short_and_says_how_long_it_was() {
        assert_eq!(quote("12.5"), "12.5");
        let long = "x".repeat(100_000_000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("… (100000000 bytes)"), "{q}");
        let wide = "é".repeat(100);
        assert!(quote(&wide).starts_with(&"é".repeat(QUOTE_CHARS)));
    }

    #[test]
    fn an_io_error_message_appears_once() {
        let e = TraceError::io(
            Path::new("t.jsonl"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        let report = anyhow_like(&e);
        assert_eq!(report, "t.jsonl: gone");
    }

    /// The message and every source, joined as `anyhow`'s `{:#}` does.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }
}
