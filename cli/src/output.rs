//! `fetch` output: one JSON line per key (to stdout or a file), and optionally each body in a
//! file of its own. Lines are written whole, so output cut short by Ctrl-C is still valid.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Where results go.
pub struct Output {
    lines: BufWriter<Box<dyn Write>>,
    dir: Option<PathBuf>,
    include_body: bool,
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
    /// Latency of the last attempt, in ms.
    pub latency_ms: Option<f64>,
    /// Attempts made.
    pub attempts: u32,
    /// The error and its id (failures only).
    pub error: Option<(String, String)>,
}

impl Output {
    /// Lines to `file` (stdout if `None`), bodies into `dir` if given (created if missing).
    pub fn open(
        file: Option<&Path>,
        dir: Option<&Path>,
        include_body: bool,
    ) -> Result<Output, String> {
        let lines: Box<dyn Write> = match file {
            Some(path) => Box::new(
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            ),
            None => Box::new(std::io::stdout()),
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        Ok(Output {
            lines: BufWriter::new(lines),
            dir: dir.map(Path::to_path_buf),
            include_body,
        })
    }

    /// Writes one record (and its body file).
    pub fn write(&mut self, record: &Record<'_>) -> Result<(), String> {
        let mut line = json!({
            "key": record.key,
            "status": record.status,
            "attempts": record.attempts,
        });
        if let Some(ms) = record.latency_ms {
            line["latency_ms"] = json!((ms * 1000.0).round() / 1000.0);
        }
        if let Some(body) = record.body {
            line["bytes"] = json!(body.len());
            if self.include_body {
                line["body"] = Value::String(String::from_utf8_lossy(body).into_owned());
            }
            if let Some(dir) = &self.dir {
                let path = dir.join(file_name(record.key));
                std::fs::write(&path, body)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                line["file"] = json!(path.display().to_string());
            }
        }
        if let Some((message, id)) = &record.error {
            line["error"] = json!(message);
            line["error_id"] = json!(id);
        }
        writeln!(self.lines, "{line}").map_err(|e| format!("cannot write output: {e}"))
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> Result<(), String> {
        self.lines
            .flush()
            .map_err(|e| format!("cannot write output: {e}"))
    }
}

/// A safe file name for a key: path separators and odd characters become `_`.
pub fn file_name(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.chars().all(|c| c == '.') {
        name.replace('.', "_")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert_eq!(file_name("42"), "42");
        assert_eq!(file_name("a/b"), "a_b");
        assert_eq!(file_name(".."), "__");
        assert_eq!(file_name("x y"), "x_y");
    }
}
