//! Where `fetch` gets its keys: arguments (a `1..=500` or `1..500` argument is a range), a
//! file (`--keys-file PATH`, `-` for stdin), or stdin when it is not a terminal.
//!
//! Keys are streamed: a file or stdin is read one line at a time by a reader thread that feeds
//! a bounded channel of [`READ_AHEAD`] keys, which the fan-out takes from as capacity frees
//! (`FanOut::fetch_each_from`); so memory stays bounded by what is in flight whatever the
//! input's size. The fan-out never blocks on that channel alone: while the input is idle
//! (`tail -f keys | tollgate fetch …`) finished results are still written, a failure still
//! stops a fail-fast run and a stop (Ctrl-C, `--deadline`) still ends it. Ranges are expanded
//! lazily and counted exactly (`0..=18446744073709551615` is 2^64 keys, as a `u128`).
//!
//! Files: one key per line (at most [`MAX_KEY_BYTES`]); blank lines and lines starting with `#`
//! are skipped; surrounding whitespace is trimmed. A line that is too long or not UTF-8 ends the
//! input with an error, which the run reports after the keys before it (exit 2).

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Where a streamed input's error is left for the caller (the keys end at the error).
pub type InputError = Arc<Mutex<Option<String>>>;

/// How the fan-out takes the keys.
pub enum Source {
    /// Arguments only: computed, never waited for (`FanOut::fetch_each`).
    Ready(Box<dyn Iterator<Item = String>>),
    /// A file or stdin is involved: keys arrive on a channel as the reader thread reads them
    /// (`FanOut::fetch_each_from`); the channel disconnects at the end of the input or at an
    /// error.
    Arriving(crossbeam_channel::Receiver<String>),
}

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

    /// Every key, in order, read lazily; `taken` counts the keys handed out. A read error ends
    /// the keys and is left in `error`.
    pub fn into_source(self, error: InputError, taken: Arc<AtomicU64>) -> Source {
        let parts =
            self.parts
                .into_iter()
                .flat_map(|p| -> Box<dyn Iterator<Item = String> + Send> {
                    match p {
                        Part::Literal(k) => Box::new(std::iter::once(k)),
                        Part::Range(a, b) => Box::new((a..=b).map(|k| k.to_string())),
                    }
                });
        let Some((reader, name)) = self.lines else {
            // Relaxed: a count read after the run, whose end orders it (thread join or the
            // fan-out's channel).
            return Source::Ready(Box::new(parts.inspect(move |_| {
                taken.fetch_add(1, Ordering::Relaxed);
            })));
        };
        let lines = LineKeys {
            reader,
            name,
            line: 0,
            error: error.clone(),
            buf: Vec::new(),
            done: false,
        };
        let (sender, keys) = crossbeam_channel::bounded::<String>(READ_AHEAD);
        // The reader ends at the end of the input, at an error, or when the run stops taking
        // keys (the receiver is dropped); until then it blocks on the input or on a full
        // channel. A run that ends while the input is idle leaves it blocked in a read, which
        // the process's exit ends.
        let spawned = std::thread::Builder::new()
            .name("tollgate-keys".into())
            .spawn(move || {
                for key in parts.chain(lines) {
                    // Relaxed: as above.
                    taken.fetch_add(1, Ordering::Relaxed);
                    if sender.send(key).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a thread, no keys (the sender went with the closure): say why; the run
            // then ends with exit 2.
            *error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("cannot start the key reader: {e}"));
        }
        Source::Arriving(keys)
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
        let Source::Arriving(arriving) = keys.into_source(error.clone(), Arc::default()) else {
            panic!("a reader's keys arrive on a channel");
        };
        let got = arriving.iter().collect();
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
        let taken = Arc::new(AtomicU64::new(0));
        let Source::Ready(ready) = keys.into_source(InputError::default(), taken.clone()) else {
            panic!("arguments alone are ready");
        };
        let all: Vec<String> = ready.collect();
        assert_eq!(all, ["x", "5", "6", "7"]);
        assert_eq!(taken.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn huge_ranges_count_exactly() {
        let keys = Keys {
            parts: vec![Part::Range(0, u64::MAX), Part::Range(0, u64::MAX)],
            lines: None,
        };
        assert_eq!(keys.count(), Some(2 * (1u128 << 64)));
        let Source::Ready(ready) = keys.into_source(InputError::default(), Arc::default()) else {
            panic!("arguments alone are ready");
        };
        let first: Vec<String> = ready.take(2).collect();
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

    /// An idle input (a pipe whose writer is quiet) never blocks whoever takes the keys: the
    /// channel is simply empty until a line comes; arguments come first, then the lines.
    #[test]
    fn an_idle_input_leaves_the_channel_empty_not_blocked() {
        struct Idle(std::sync::mpsc::Receiver<&'static [u8]>);
        impl Read for Idle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.recv() {
                    Ok(bytes) => {
                        buf[..bytes.len()].copy_from_slice(bytes);
                        Ok(bytes.len())
                    }
                    Err(_) => Ok(0),
                }
            }
        }
        let (write, input) = std::sync::mpsc::channel();
        let keys = Keys {
            parts: vec![Part::Literal("first".into())],
            lines: Some((Box::new(BufReader::new(Idle(input))), "pipe".into())),
        };
        let taken = Arc::new(AtomicU64::new(0));
        let Source::Arriving(arriving) = keys.into_source(InputError::default(), taken.clone())
        else {
            panic!("a reader's keys arrive on a channel");
        };
        let timeout = std::time::Duration::from_secs(20);
        assert_eq!(arriving.recv_timeout(timeout).as_deref(), Ok("first"));
        assert_eq!(
            arriving.try_recv(),
            Err(crossbeam_channel::TryRecvError::Empty),
            "nothing yet, and no wait"
        );
        write.send(b"second\n").unwrap();
        assert_eq!(arriving.recv_timeout(timeout).as_deref(), Ok("second"));
        drop(write); // end of input: the channel disconnects
        assert!(arriving.recv_timeout(timeout).is_err());
        assert_eq!(taken.load(Ordering::Relaxed), 2);
    }
}
