//! The terminal: `--color auto|always|never` for our own messages and the progress bar, and
//! stdout writes that end the process quietly when the reader has gone (`| head -1`).

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides once, at start-up, whether messages on stderr are coloured.
pub fn set_color(choice: ColorChoice) {
    let on = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let _ = COLOR.set(on);
}

/// Whether to colour.
pub fn color() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// `label` in bold `code` colour (an ANSI SGR code) when colouring, else as is.
pub fn paint(label: &str, code: &str) -> String {
    if color() {
        format!("\x1b[1;{code}m{label}\x1b[0m")
    } else {
        label.to_owned()
    }
}

/// Writes a line to stdout; if the reader has gone (EPIPE), ends the process with exit 0 and
/// no message: whoever read our output took what they wanted (`tollgate demo | head -1`).
pub fn out_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`out_line`].
#[macro_export]
macro_rules! outln {
    () => { $crate::term::out_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::term::out_line(format_args!($($arg)*)) };
}
