//! `tollgate`: `demo` (the fan-out at a glance), `fetch` (a rate-limited bulk fetcher) and
//! `serve` (a rate-limited HTTP service with fault injection).
//!
//! Exit codes: 0 success, 1 a fetch failed, 2 bad usage (clap's own code for bad flags),
//! 130 interrupted.

mod demo;
mod duration;
mod fetch;
mod keys;
mod output;
mod progress;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::CancelToken;

/// Rate limits, in-flight caps and cancellation for synchronous Rust, from the command line.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local server and fan out over it: progress, a summary, then a fail-fast round.
    Demo(demo::DemoArgs),
    /// Fetch a URL template for many keys with a rate limit and a cap on requests in flight.
    Fetch(fetch::FetchArgs),
    /// Serve a rate-limited HTTP API with fault injection (for demos, tests and load tests).
    Serve(Box<serve::ServeArgs>),
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
    let cli = Cli::parse();
    // SIGINT and SIGTERM cancel this token; every command watches it.
    let stop = CancelToken::new();
    if let Err(e) = signals::cancel_on_interrupt(&stop) {
        eprintln!("warning: cannot catch SIGINT/SIGTERM: {e}");
    }
    let outcome = match &cli.command {
        Command::Demo(args) => demo::run(args, &stop),
        Command::Fetch(args) => fetch::run(args, &stop),
        Command::Serve(args) => serve::run(args, &stop).map_err(Failure::Usage),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Interrupted(message)) => {
            eprintln!("interrupted: {message}");
            ExitCode::from(130)
        }
    }
}
