//! `fetch` output: one JSON line per key (to stdout or a file), and optionally each body in a
//! file of its own.
//!
//! Invariants:
//!
//! 1. Each JSON line is written whole (one `write_all` of the line and its newline) and flushed
//!    as its key completes, so what is on disk or in the pipe is always whole lines, however the
//!    run ends (a SIGKILL loses at most the line being written). `--output` is synced at exit.
//! 2. A body file's name is the key, percent-encoded ([`file_name`]): every byte but
//!    `a-z 0-9 - _` and a `.` that does not start the name becomes `%XX` (upper-case hex), so
//!    two keys never share a name and [`key_of`] gives the key back. Upper-case letters are
//!    encoded too, so names stay distinct on a case-insensitive file system: a name's only
//!    letters are literal lower-case ones and the hex digits of escapes, which always follow a
//!    `%` (never literal), so two names that differ fold to two names that differ. A name longer
//!    than [`MAX_NAME`] keeps the start of the encoding plus `~` and a 128-bit hash of the whole
//!    key in lower-case hex (its JSON line says which key it holds).
//! 3. A body file is never overwritten unless asked (`--overwrite`): an existing file is that
//!    key's error. Any file error is that key's failure, reported in its line, not the run's.
//! 4. Nothing else is printed from the response but what the line's fields say; URLs in lines
//!    never hold userinfo or a query string (either may hold credentials).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Longest body file name written (most file systems allow 255 bytes).
pub const MAX_NAME: usize = 200;

/// Where results go.
pub struct Output {
    lines: Sink,
    dir: Option<PathBuf>,
    include_body: bool,
    overwrite: bool,
}

enum Sink {
    Stdout(std::io::Stdout),
    File(File, PathBuf),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One key's result.
#[derive(Debug)]
pub struct Record<'a> {
    /// The key.
    pub key: &'a str,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// The body (successes only).
    pub body: Option<&'a [u8]>,
    /// The URL that answered (after redirects), without userinfo.
    pub url: Option<&'a str>,
    /// Latency of the last attempt, in ms.
    pub latency_ms: Option<f64>,
    /// Attempts made.
    pub attempts: u32,
    /// The error and its id (failures only).
    pub error: Option<(String, String)>,
}

/// How writing a line failed.
#[derive(Debug)]
pub enum LineError {
    /// The reader of stdout went away (`| head`): stop quietly.
    BrokenPipe,
    /// Anything else: the run cannot report results any more.
    Other(String),
}

impl Output {
    /// Lines to `file` (stdout if `None`), bodies into `dir` if given (created if missing).
    pub fn open(
        file: Option<&Path>,
        dir: Option<&Path>,
        include_body: bool,
        overwrite: bool,
    ) -> Result<Output, String> {
        let lines = match file {
            Some(path) => Sink::File(
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
                path.to_path_buf(),
            ),
            None => Sink::Stdout(std::io::stdout()),
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        Ok(Output {
            lines,
            dir: dir.map(Path::to_path_buf),
            include_body,
            overwrite,
        })
    }

    /// Writes `record`'s body file, if bodies go to a directory; `Ok(None)` if they do not, the
    /// file's path, or the error that is this key's failure (invariant 3).
    pub fn write_body(&self, record: &Record<'_>) -> Result<Option<PathBuf>, String> {
        let (Some(dir), Some(body)) = (&self.dir, record.body) else {
            return Ok(None);
        };
        let path = dir.join(file_name(record.key));
        let shown = path.display();
        if self.overwrite {
            // Written aside, then renamed over: a reader never sees half a body.
            let aside = dir.join(format!(".{}.part", std::process::id()));
            std::fs::write(&aside, body)
                .and_then(|()| std::fs::rename(&aside, &path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&aside);
                    format!("cannot write {shown}: {e}")
                })?;
        } else {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    ErrorKind::AlreadyExists => {
                        format!("{shown} exists; not overwritten (use --overwrite)")
                    }
                    _ => format!("cannot create {shown}: {e}"),
                })?;
            if let Err(e) = file.write_all(body) {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(format!("cannot write {shown}: {e}"));
            }
        }
        Ok(Some(path))
    }

    /// Writes one record's line, whole, and flushes it (invariant 1).
    pub fn write_line(
        &mut self,
        record: &Record<'_>,
        file: Option<&Path>,
    ) -> Result<(), LineError> {
        let mut line = json!({
            "key": record.key,
            "status": record.status,
            "attempts": record.attempts,
        });
        if let Some(url) = record.url {
            // As in every message: no userinfo, no query (either may hold credentials).
            let without_query = url.split_once('?').map_or(url, |(path, _)| path);
            line["url"] = json!(tollgate::http::redact_userinfo(without_query));
        }
        if let Some(ms) = record.latency_ms {
            line["latency_ms"] = json!((ms * 1000.0).round() / 1000.0);
        }
        if let Some(body) = record.body {
            line["bytes"] = json!(body.len());
            if self.include_body {
                line["body"] = Value::String(String::from_utf8_lossy(body).into_owned());
            }
        }
        if let Some(file) = file {
            line["file"] = json!(file.display().to_string());
        }
        if let Some((message, id)) = &record.error {
            line["error"] = json!(message);
            line["error_id"] = json!(id);
        }
        let mut text = line.to_string();
        text.push('\n');
        let written = match &mut self.lines {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            Sink::File(file, _) => file.write_all(text.as_bytes()),
        };
        written.map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => LineError::BrokenPipe,
            _ => LineError::Other(format!("cannot write output: {e}")),
        })
    }

    /// Flushes, and syncs an `--output` file to disk (invariant 1).
    pub fn finish(&mut self) -> Result<(), String> {
        match &mut self.lines {
            Sink::Stdout(out) => match out.flush() {
                Err(e) if e.kind() != ErrorKind::BrokenPipe => {
                    Err(format!("cannot write output: {e}"))
                }
                _ => Ok(()),
            },
            // Only a regular file can be synced (`-o /dev/null` or a FIFO cannot).
            Sink::File(file, path) => match file.metadata() {
                Ok(meta) if meta.is_file() => file
                    .sync_all()
                    .map_err(|e| format!("cannot sync {}: {e}", path.display())),
                _ => Ok(()),
            },
        }
    }
}

/// A body file name for `key` (invariant 2): unique, and reversible with [`key_of`] unless the
/// key is long.
pub fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for (i, &b) in key.as_bytes().iter().enumerate() {
        // Not upper-case letters: see invariant 2 (case-insensitive file systems).
        let literal = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || b == b'_'
            || (b == b'.' && i > 0);
        if literal {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() <= MAX_NAME {
        return name;
    }
    // Keep whole escapes: cut before a `%` that would be split.
    let mut cut = MAX_NAME - 34;
    while let Some(p) = name[..cut].rfind('%').filter(|&p| p + 3 > cut) {
        cut = p;
    }
    format!("{}~{:032x}", &name[..cut], fnv1a_128(key.as_bytes()))
}

/// The key a body file name holds; `None` for a hashed (long) name or one this did not make.
/// (Users decode names with any percent-decoder; this is the tests' check of invariant 2.)
#[cfg(test)]
pub fn key_of(name: &str) -> Option<String> {
    if name.contains('~') {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a, 128 bits: a stable hash (unlike std's) for long names.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_reversible() {
        let keys = [
            "42", "a/b", "a_b", "a b", "a?b", "a%2Fb", "é", "ü", "..", ".", ".hidden", "a.b", "A",
            "a", "x\u{0}y", "con", "a\\b",
        ];
        let names: Vec<String> = keys.iter().map(|k| file_name(k)).collect();
        for (key, name) in keys.iter().zip(&names) {
            assert!(!name.contains('/') && !name.contains('\\') && !name.contains('\0'));
            assert!(name != "." && name != "..");
            assert_eq!(key_of(name).as_deref(), Some(*key), "{name}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name(".."), "%2E.");
        assert_eq!(file_name("Ab"), "%41b");
    }

    /// On a case-insensitive file system (macOS, Windows) two names that differ only in case are
    /// one file: no two keys may get such names, however they are cased.
    #[test]
    fn names_stay_distinct_when_case_is_folded() {
        let keys = [
            "a", "A", "ab", "aB", "Ab", "AB", "%41", "%61", "J", "j", "%4A", "%4a", "Z", "z", "é",
            "É", "straße", "STRASSE", "K", "\u{212A}", "x~y", "X~Y",
        ];
        let mut folded: Vec<String> = keys
            .iter()
            .map(|k| {
                let name = file_name(k);
                assert_eq!(key_of(&name).as_deref(), Some(*k), "{name} maps back");
                name.to_lowercase()
            })
            .collect();
        folded.sort();
        folded.dedup();
        assert_eq!(
            folded.len(),
            keys.len(),
            "two keys share a case-folded name"
        );
        // Exhaustively over every one- and two-byte ASCII key: no two fold together.
        let ascii: Vec<String> = (0u8..128)
            .flat_map(|a| (0u8..128).map(move |b| String::from_utf8(vec![a, b]).unwrap()))
            .chain((0u8..128).map(|a| String::from_utf8(vec![a]).unwrap()))
            .collect();
        let mut folded: Vec<String> = ascii.iter().map(|k| file_name(k).to_lowercase()).collect();
        folded.sort();
        folded.dedup();
        assert_eq!(folded.len(), ascii.len());
    }

    #[test]
    fn long_names_are_cut_and_hashed() {
        let long_a = "é".repeat(300);
        let long_b = format!("{}x", "é".repeat(299));
        let (a, b) = (file_name(&long_a), file_name(&long_b));
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(key_of(&a), None);
        assert_eq!(file_name(&long_a), a, "stable");
    }
}
