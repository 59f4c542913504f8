//! `tollgate`: `demo` (the fan-out at a glance), `fetch` (a rate-limited bulk fetcher) and
//! `serve` (a rate-limited HTTP service with fault injection).
//!
//! Exit codes: 0 success, 1 a fetch failed, 2 bad usage (clap's own code for bad flags),
//! 130 interrupted. A closed stdout (`| head -1`) ends a command quietly with 0.

mod demo;
mod duration;
mod fetch;
mod keys;
mod logging;
mod output;
mod progress;
mod serve;
mod signals;
mod term;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tollgate::CancelToken;

/// Rate limits, in-flight caps and cancellation for synchronous Rust, from the command line.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    /// When to colour messages and the progress bar.
    #[arg(long, global = true, value_enum, default_value_t = term::ColorChoice::Auto)]
    color: term::ColorChoice,
    /// More log detail on stderr: -v error records and summaries, -vv attempts and waits,
    /// -vvv everything. `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Quiet: no log lines (not even `serve`'s access log), and no progress bar or summary line
    /// from `fetch`.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local server and fan out over it: progress, a summary, then a fail-fast round.
    Demo(demo::DemoArgs),
    /// Fetch a URL template for many keys with a rate limit and a cap on requests in flight.
    Fetch(Box<fetch::FetchArgs>),
    /// Serve a rate-limited HTTP API with fault injection (for demos, tests and load tests).
    Serve(Box<serve::ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `tollgate man > tollgate.1`.
    Man,
}

/// How a command ended badly.
#[derive(Debug)]
enum Failure {
    /// Bad flags, templates, files or ports: exit 2.
    Usage(String),
    /// A fetch failed: exit 1.
    Failed(String),
    /// Stopped by SIGINT/SIGTERM: exit 130.
    Interrupted(String),
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    term::set_color(cli.color);
    // Held to the end of `main`: its drop writes out the log lines still queued.
    let _log = logging::init(cli.verbose, cli.quiet, cli.log_format);
    // SIGINT and SIGTERM cancel this token; every command watches it.
    let stop = CancelToken::new();
    if let Err(e) = signals::cancel_on_interrupt(&stop) {
        eprintln!("warning: cannot catch SIGINT/SIGTERM: {e}");
    }
    let outcome = match &mut cli.command {
        Command::Demo(args) => demo::run(args, &stop),
        Command::Fetch(args) => {
            args.quiet = cli.quiet;
            fetch::run(args, &stop)
        }
        Command::Serve(args) => serve::run(args, &stop).map_err(Failure::Usage),
        Command::Completions { shell } => generated(|out| {
            clap_complete::generate(*shell, &mut Cli::command(), "tollgate", out);
            Ok(())
        }),
        Command::Man => generated(|out| clap_mangen::Man::new(Cli::command()).render(out)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{} {message}", term::paint("error:", "31"));
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("{} {message}", term::paint("error:", "31"));
            ExitCode::from(1)
        }
        Err(Failure::Interrupted(message)) => {
            eprintln!("{} {message}", term::paint("interrupted:", "33"));
            ExitCode::from(130)
        }
    }
}

/// Writes generated text (completions, man page) to stdout; a closed pipe is not an error.
fn generated(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let mut buffer = Vec::new();
    write(&mut buffer).map_err(|e| Failure::Failed(format!("cannot generate: {e}")))?;
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, &buffer)
        .and_then(|()| std::io::Write::flush(&mut out))
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Failed(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
