//! Where `fetch` gets its keys: arguments (a `1..=500` or `1..500` argument is a range), a
//! file (`--keys-file PATH`, `-` for stdin), or stdin when it is not a terminal.
//!
//! Keys are streamed: a file or stdin is read one line at a time, by a reader thread feeding a
//! channel of [`READ_AHEAD`] keys, as the fan-out asks for the next key; so memory stays bounded
//! by what is in flight whatever the input's size, and a stop (Ctrl-C, a failure) ends the keys
//! even while the input is idle (`tail -f keys | tollgate fetch …`). Ranges are expanded lazily
//! and counted exactly (`0..=18446744073709551615` is 2^64 keys, as a `u128`).
//!
//! Files: one key per line (at most [`MAX_KEY_BYTES`]); blank lines and lines starting with `#`
//! are skipped; surrounding whitespace is trimmed. A line that is too long or not UTF-8 ends the
//! input with an error, which the run reports after the keys before it (exit 2).

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use tollgate::CancelToken;

/// Longest key line read from a file or stdin.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Keys the reader thread may read ahead of the fan-out (at most 64 × 64 KiB).
pub const READ_AHEAD: usize = 64;

/// The keys to fetch, in order.
pub struct Keys {
    /// Literal keys and ranges, expanded lazily.
    pub parts: Vec<Part>,
    /// A file or stdin, read as keys are taken (after `parts`).
    lines: Option<(Box<dyn BufRead + Send>, String)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("parts", &self.parts)
            .field("lines", &self.lines.as_ref().map(|(_, name)| name))
            .finish()
    }
}

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A key as given.
    Literal(String),
    /// `start..=end` (both included).
    Range(u64, u64),
}

/// Where a streamed input's error is left for the caller (the iterator ends at the error).
pub type InputError = Arc<Mutex<Option<String>>>;

impl Keys {
    /// How many keys there are, exactly; `None` when they come from a file or stdin (not read
    /// ahead: that is the point).
    pub fn count(&self) -> Option<u128> {
        if self.lines.is_some() {
            return None;
        }
        Some(
            self.parts
                .iter()
                .map(|p| match p {
                    Part::Literal(_) => 1,
                    Part::Range(a, b) => u128::from(*b) - u128::from(*a) + 1,
                })
                .sum(),
        )
    }

    /// Every key, in order, read lazily; a read error ends the keys and is left in `error`;
    /// `stop` being cancelled ends them at once, even while a file or stdin is idle.
    pub fn into_iter(self, error: InputError, stop: &CancelToken) -> impl Iterator<Item = String> {
        let parts = self
            .parts
            .into_iter()
            .flat_map(|p| -> Box<dyn Iterator<Item = String>> {
                match p {
                    Part::Literal(k) => Box::new(std::iter::once(k)),
                    Part::Range(a, b) => Box::new((a..=b).map(|k| k.to_string())),
                }
            });
        let stop = stop.clone();
        let lines = self.lines.into_iter().flat_map(move |(reader, name)| {
            let keys = LineKeys {
                reader,
                name,
                line: 0,
                error: error.clone(),
                buf: Vec::new(),
                done: false,
            };
            Streamed::start(keys, &stop)
        });
        parts.chain(lines)
    }
}

/// Keys read on a thread of their own, so that waiting for input never blocks a stop.
struct Streamed {
    keys: Receiver<Option<String>>,
    stop: CancelToken,
    /// Wakes `next` when `stop` is cancelled (dropped with the iterator).
    _wake: tollgate::cancel::Registration,
}

impl Streamed {
    fn start(mut lines: LineKeys, stop: &CancelToken) -> Streamed {
        let error = lines.error.clone();
        let (sender, keys) = sync_channel::<Option<String>>(READ_AHEAD);
        let wake: SyncSender<Option<String>> = sender.clone();
        // The reader ends at the end of the input, at an error, or when nobody takes keys any
        // more (the run ended); until then it blocks on the input or on a full channel.
        let spawned = std::thread::Builder::new()
            .name("tollgate-keys".into())
            .spawn(move || {
                for key in lines.by_ref() {
                    if sender.send(Some(key)).is_err() {
                        return;
                    }
                }
                let _ = sender.send(None);
            });
        if let Err(e) = spawned {
            // Without a thread, no keys: say why (the run then ends with exit 2).
            *error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("cannot start the key reader: {e}"));
            let _ = wake.try_send(None);
        }
        // A stop sends the end marker; if the channel is full, `next` sees the stop itself.
        let registration = stop.on_cancel(move || {
            let _ = wake.try_send(None);
        });
        Streamed {
            keys,
            stop: stop.clone(),
            _wake: registration,
        }
    }
}

impl Iterator for Streamed {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.keys.recv().ok().flatten()
    }
}

/// Keys from a reader, one line at a time.
struct LineKeys {
    reader: Box<dyn BufRead + Send>,
    name: String,
    line: u64,
    error: InputError,
    buf: Vec<u8>,
    done: bool,
}

impl Iterator for LineKeys {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            // One byte more than allowed shows a line is too long without reading all of it.
            let limit = (MAX_KEY_BYTES + 2) as u64;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf);
            match read {
                Ok(0) => self.done = true,
                Ok(_) => {
                    let ended = self.buf.last() == Some(&b'\n');
                    if !ended && self.buf.len() as u64 >= limit {
                        return self.fail(format!(
                            "line {} of {} is longer than {MAX_KEY_BYTES} bytes",
                            self.line, self.name
                        ));
                    }
                    let Ok(text) = std::str::from_utf8(&self.buf) else {
                        return self
                            .fail(format!("line {} of {} is not UTF-8", self.line, self.name));
                    };
                    let key = text.trim();
                    if !key.is_empty() && !key.starts_with('#') {
                        return Some(key.to_owned());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.line -= 1,
                Err(e) => return self.fail(format!("cannot read keys from {}: {e}", self.name)),
            }
        }
        None
    }
}

impl LineKeys {
    fn fail(&mut self, message: String) -> Option<String> {
        self.done = true;
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        None
    }
}

/// Parses one argument: a range or a literal key.
pub fn parse_arg(arg: &str) -> Result<Part, String> {
    let range = arg
        .split_once("..=")
        .map(|(a, b)| (a, b, true))
        .or_else(|| arg.split_once("..").map(|(a, b)| (a, b, false)));
    if let Some((a, b, inclusive)) = range
        && let (Ok(start), Ok(end)) = (a.parse::<u64>(), b.parse::<u64>())
    {
        let end = if inclusive {
            end
        } else {
            end.checked_sub(1)
                .ok_or_else(|| format!("range `{arg}` is empty"))?
        };
        if start > end {
            return Err(format!("range `{arg}` is empty"));
        }
        return Ok(Part::Range(start, end));
    }
    if arg.is_empty() {
        return Err("an empty key".into());
    }
    Ok(Part::Literal(arg.to_string()))
}

/// The keys from arguments, then a file or stdin (read lazily).
pub fn collect(args: &[String], file: Option<&Path>) -> Result<Keys, String> {
    let mut keys = Keys {
        parts: Vec::new(),
        lines: None,
    };
    for arg in args {
        keys.parts.push(parse_arg(arg)?);
    }
    keys.lines = match file {
        Some(path) if path == Path::new("-") => Some(stdin()),
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
            Some((
                Box::new(BufReader::new(file)) as Box<dyn BufRead + Send>,
                path.display().to_string(),
            ))
        }
        None if args.is_empty() && !std::io::stdin().is_terminal() => Some(stdin()),
        None => None,
    };
    if keys.parts.is_empty() && keys.lines.is_none() {
        return Err("no keys: give keys or a range (1..=500) as arguments, --keys-file, or pipe them to stdin".into());
    }
    Ok(keys)
}

fn stdin() -> (Box<dyn BufRead + Send>, String) {
    (
        Box::new(BufReader::new(std::io::stdin())),
        "stdin".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_text(text: &'static [u8]) -> (Vec<String>, Option<String>) {
        let keys = Keys {
            parts: vec![],
            lines: Some((Box::new(text), "test".into())),
        };
        assert_eq!(keys.count(), None);
        let error = InputError::default();
        let got = keys.into_iter(error.clone(), &CancelToken::new()).collect();
        let error = error.lock().unwrap().clone();
        (got, error)
    }

    #[test]
    fn ranges_and_literals() {
        assert_eq!(parse_arg("1..=3"), Ok(Part::Range(1, 3)));
        assert_eq!(parse_arg("1..3"), Ok(Part::Range(1, 2)));
        assert!(parse_arg("3..=1").is_err());
        assert!(parse_arg("0..0").is_err());
        assert_eq!(parse_arg("abc"), Ok(Part::Literal("abc".into())));
        assert_eq!(parse_arg("a..b"), Ok(Part::Literal("a..b".into())));
        let keys = Keys {
            parts: vec![Part::Literal("x".into()), Part::Range(5, 7)],
            lines: None,
        };
        assert_eq!(keys.count(), Some(4));
        let all: Vec<String> = keys
            .into_iter(InputError::default(), &CancelToken::new())
            .collect();
        assert_eq!(all, ["x", "5", "6", "7"]);
    }

    #[test]
    fn huge_ranges_count_exactly() {
        let keys = Keys {
            parts: vec![Part::Range(0, u64::MAX), Part::Range(0, u64::MAX)],
            lines: None,
        };
        assert_eq!(keys.count(), Some(2 * (1u128 << 64)));
        let first: Vec<String> = keys
            .into_iter(InputError::default(), &CancelToken::new())
            .take(2)
            .collect();
        assert_eq!(first, ["0", "1"]);
    }

    #[test]
    fn lines_are_streamed_and_checked() {
        assert_eq!(
            from_text(b"a\n\n# comment\n  b  \r\nc"),
            (vec!["a".into(), "b".into(), "c".into()], None)
        );
        let (keys, error) = from_text(b"a\n\xff\xfe\nb\n");
        assert_eq!(keys, ["a"]);
        assert!(error.unwrap().contains("line 2 of test is not UTF-8"));
        let long: &'static [u8] = Box::leak(
            [b"ok\n".as_slice(), &vec![b'x'; MAX_KEY_BYTES + 10]]
                .concat()
                .into_boxed_slice(),
        );
        let (keys, error) = from_text(long);
        assert_eq!(keys, ["ok"]);
        assert!(error.unwrap().contains("longer than"));
    }

    #[test]
    fn a_stop_ends_keys_from_an_idle_input() {
        // A reader that never answers (an idle pipe).
        struct Idle;
        impl Read for Idle {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                std::thread::park();
                Ok(0)
            }
        }
        let keys = Keys {
            parts: vec![],
            lines: Some((Box::new(BufReader::new(Idle)), "idle".into())),
        };
        let stop = CancelToken::new();
        let mut iter = keys.into_iter(InputError::default(), &stop);
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.cancel())
        };
        assert_eq!(iter.next(), None);
        stopper.join().unwrap();
    }
}
