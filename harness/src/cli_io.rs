//! What every `meshguard` command shares: one table of exit codes, `-` for standard input,
//! bounded line reading, the `--output` formats, and quiet exits on a closed pipe.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// The exit codes, the same for every command (README "Exit codes"):
///
/// | code | meaning |
/// |---|---|
/// | 0 | done; the answer is yes (valid, allowed, passed, nothing changed) |
/// | 1 | done; the answer is no: `eval` denies, a `test` case fails, `replay`/`diff --fail-on-change` found a change |
/// | 2 | bad input: an invalid policy (every command, `check` included), an unreadable or malformed file, bad arguments |
/// | 3 | the environment failed: Envoy would not start, a port, a build, an I/O error |
pub mod exit {
    pub const OK: u8 = 0;
    pub const NO: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const FAILED: u8 = 3;
}

/// Shorthand for an [`ExitCode`] from [`exit`].
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// An error in the input (exit [`exit::BAD_INPUT`]), as opposed to a failure of the
/// environment. The message already names the file.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A [`BadInput`] error.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// The longest input file read whole (a policy, a request, a test file).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// How a path is shown in messages: `-` is `(stdin)`.
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        "(stdin)".to_string()
    } else {
        path.display().to_string()
    }
}

pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Read a whole file as UTF-8 text (`-`: standard input), at most [`MAX_FILE_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let name = display_name(path);
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if is_stdin(path) {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| bad_input(format!("{name}: cannot read: {e}")))?)
    };
    reader
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad_input(format!("{name}: cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad_input(format!("{name}: larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| bad_input(format!("{name}: not UTF-8 text: {e}")))
}

/// One line of a log, read with [`read_line_bounded`].
pub enum Line {
    /// A line (lossily decoded: a byte that is not UTF-8 becomes U+FFFD), without its newline.
    Text(String),
    /// A line longer than the cap; its bytes were not kept.
    TooLong,
}

/// Read one line of at most `cap` bytes without ever holding more than `cap` bytes: a longer
/// line is reported as [`Line::TooLong`] after reading on to its end, unless more than
/// `skip_cap` further bytes pass without a newline (then the read stops with an error:
/// `/dev/zero` never ends a line). `Ok(None)` at the end of input.
pub fn read_line_bounded(reader: &mut dyn BufRead, cap: usize, skip_cap: u64) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    let mut skipped: u64 = 0;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, found, used) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (chunk.get(..i).unwrap_or_default(), true, i + 1),
            None => (chunk, false, chunk.len()),
        };
        if too_long {
            skipped += part.len() as u64;
        } else if buf.len() + part.len() > cap {
            too_long = true;
            skipped = (buf.len() + part.len()) as u64;
            buf = Vec::new();
        } else {
            buf.extend_from_slice(part);
        }
        reader.consume(used);
        if found {
            break;
        }
        if too_long && skipped > skip_cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {skip_cap} bytes without a newline: not a log"),
            ));
        }
    }
    if !any {
        return Ok(None);
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Line::Text(String::from_utf8_lossy(&buf).into_owned())))
}

/// Open a log for line reading (`-`: standard input).
pub fn open_lines(path: &Path) -> Result<Box<dyn BufRead>> {
    if is_stdin(path) {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let file = std::fs::File::open(path).map_err(|e| bad_input(format!("{}: cannot read: {e}", path.display())))?;
    Ok(Box::new(std::io::BufReader::new(file)))
}

/// `--output`: how a command prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON (one document, or one object per line where the command streams).
    Json,
}

/// Whether `e` is (caused by) writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The exit code for an error from a command: [`exit::BAD_INPUT`] for bad input,
/// [`exit::FAILED`] otherwise.
pub fn error_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| {
        c.downcast_ref::<BadInput>().is_some() || c.downcast_ref::<crate::policy_file::PolicyFileError>().is_some()
    }) {
        exit::BAD_INPUT
    } else {
        exit::FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize) -> Vec<String> {
        let mut r: &[u8] = input;
        let mut out = Vec::new();
        while let Some(line) = read_line_bounded(&mut r, cap, 1 << 20).unwrap() {
            out.push(match line {
                Line::Text(t) => t,
                Line::TooLong => "<too long>".to_string(),
            });
        }
        out
    }

    #[test]
    fn bounded_lines() {
        assert_eq!(lines(b"a\nbb\r\n\nccc", 10), ["a", "bb", "", "ccc"]);
        assert_eq!(lines(b"a\n0123456789abc\nd\n", 10), ["a", "<too long>", "d"]);
        assert_eq!(lines(b"x\xffy\n", 10), ["x\u{fffd}y"]);
        let mut endless = std::io::BufReader::new(std::io::repeat(0));
        assert!(read_line_bounded(&mut endless, 1024, 1 << 20).is_err());
    }
}
