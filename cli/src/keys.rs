//! Where `fetch` gets its keys: arguments (a `1..=500` or `1..500` argument is a range), a
//! file (`--keys-file PATH`, `-` for stdin), or stdin when it is not a terminal.
//!
//! Files: one key per line; blank lines and lines starting with `#` are skipped.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;

/// The keys to fetch, in order.
#[derive(Debug, Default)]
pub struct Keys {
    /// Literal keys and ranges, expanded lazily.
    pub parts: Vec<Part>,
}

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A key as given.
    Literal(String),
    /// `start..=end` (both included).
    Range(u64, u64),
}

impl Keys {
    /// How many keys there are.
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(_) => 1,
                Part::Range(a, b) => b - a + 1,
            })
            .sum()
    }

    /// Every key, in order.
    pub fn into_iter(self) -> impl Iterator<Item = String> {
        self.parts
            .into_iter()
            .flat_map(|p| -> Box<dyn Iterator<Item = String>> {
                match p {
                    Part::Literal(k) => Box::new(std::iter::once(k)),
                    Part::Range(a, b) => Box::new((a..=b).map(|k| k.to_string())),
                }
            })
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

/// Collects the keys from arguments, a file, or stdin.
pub fn collect(args: &[String], file: Option<&Path>) -> Result<Keys, String> {
    let mut keys = Keys::default();
    for arg in args {
        keys.parts.push(parse_arg(arg)?);
    }
    match file {
        Some(path) if path == Path::new("-") => {
            read_lines(std::io::stdin().lock(), "stdin", &mut keys)?
        }
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
            read_lines(BufReader::new(file), &path.display().to_string(), &mut keys)?;
        }
        None if args.is_empty() && !std::io::stdin().is_terminal() => {
            read_lines(std::io::stdin().lock(), "stdin", &mut keys)?;
        }
        None => {}
    }
    if keys.parts.is_empty() {
        return Err("no keys: give keys or a range (1..=500) as arguments, --keys-file, or pipe them to stdin".into());
    }
    Ok(keys)
}

fn read_lines(reader: impl Read, name: &str, keys: &mut Keys) -> Result<(), String> {
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|e| format!("cannot read keys from {name}: {e}"))?;
        let key = line.trim();
        if !key.is_empty() && !key.starts_with('#') {
            keys.parts.push(Part::Literal(key.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["x", "5", "6", "7"]);
    }
}
