//! SIGINT and SIGTERM: cancel the command's token (from a signal-hook thread, not inside the
//! signal handler, so `cancel` may take locks and run `on_cancel` callbacks).

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tollgate::CancelToken;

/// Cancels `stop` on the first SIGINT or SIGTERM (later ones are no-ops: it is cancelled).
pub fn cancel_on_interrupt(stop: &CancelToken) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("tollgate-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                stop.cancel();
            }
        })?;
    Ok(())
}
