//! Physical lines of a text trace, shared by every reader: counts lines
//! from 1, strips a leading UTF-8 byte-order mark and line ends, skips
//! blank lines, and rejects bytes that are not UTF-8 with an error naming
//! the line and the byte, and a line longer than [`MAX_LINE_BYTES`] (a
//! file without line ends must not be read whole into memory).

use crate::error::TraceError;
use std::io::{BufRead, Read};

/// The longest line a trace may have: a request of the longest prompt
/// (`MAX_INPUT_TOKENS`) in 1-token blocks with 20-digit hashes fits.
pub(crate) const MAX_LINE_BYTES: u64 = 256 << 20;
use std::path::{Path, PathBuf};

/// One line of input, with where it came from (for messages).
pub(crate) struct Line<'a> {
    pub(crate) path: &'a Path,
    /// 1-based.
    pub(crate) no: u64,
    pub(crate) text: &'a str,
}

pub(crate) struct Lines<R> {
    input: R,
    pub(crate) path: PathBuf,
    pub(crate) line_no: u64,
    buf: Vec<u8>,
    max_line: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(input: R, path: &Path) -> Self {
        Lines {
            input,
            path: path.to_path_buf(),
            line_no: 0,
            buf: Vec::with_capacity(256),
            max_line: MAX_LINE_BYTES,
        }
    }

    /// The next non-blank line, without its line end; `Ok(None)` at the end
    /// of the input. `what` names the expected content for the UTF-8 error.
    pub(crate) fn next_line(&mut self, what: &str) -> Result<Option<Line<'_>>, TraceError> {
        let (start, end) = loop {
            self.buf.clear();
            let n = (&mut self.input)
                .take(self.max_line + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if n as u64 > self.max_line {
                return Err(TraceError::invalid(
                    &self.path,
                    self.line_no,
                    "(line)",
                    format!(
                        "longer than {} bytes (expected {what} per line)",
                        self.max_line
                    ),
                ));
            }
            let start = if self.line_no == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            let mut end = self.buf.len();
            while end > start && matches!(self.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            break (start, end);
        };
        match std::str::from_utf8(&self.buf[start..end]) {
            Ok(text) => Ok(Some(Line {
                path: &self.path,
                no: self.line_no,
                text,
            })),
            Err(e) => Err(TraceError::invalid(
                &self.path,
                self.line_no,
                "(line)",
                format!(
                    "not valid UTF-8 at byte {} of the line (expected {what})",
                    start + e.valid_up_to() + 1
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_a_runaway_line_is_refused_unread() {
        let text = b"\xEF\xBB\xBFfirst\r\n\n  \nsecond\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let mut lines = Lines::new(&text[..], Path::new("t"));
        lines.max_line = 16;
        let l = lines.next_line("x").unwrap().unwrap();
        assert_eq!((l.no, l.text), (1, "first"));
        let l = lines.next_line("x").unwrap().unwrap();
        assert_eq!((l.no, l.text), (4, "second"));
        let e = lines.next_line("a request").err().unwrap();
        assert_eq!(
            e.to_string(),
            "t:5: (line): longer than 16 bytes (expected a request per line)"
        );
    }
}
