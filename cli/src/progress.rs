//! The progress bar (done / in flight / rate / ETA), fed by the fan-out's heartbeats. Drawn on
//! stderr, and only on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate::fanout::Progress;

/// A bar for `total` keys (unknown for streamed input); hidden unless `visible` and stderr is a
/// terminal. Plain (no colours) unless `--color` allows them.
pub fn bar(total: Option<u64>, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    if !visible || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = match (total.is_some(), crate::term::color()) {
        (true, true) => "{bar:30.cyan/blue} {pos}/{len} {msg} ETA {eta}",
        (true, false) => "{bar:30} {pos}/{len} {msg} ETA {eta}",
        (false, _) => "{spinner} {pos} done · {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Moves the bar to a heartbeat.
pub fn update(bar: &ProgressBar, p: &Progress) {
    bar.set_position(p.done + p.failed);
    bar.set_message(format!(
        "in flight {} · {:.1}/s · retries {}",
        p.in_flight, p.rate, p.retries
    ));
}
