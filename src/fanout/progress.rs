//! `ProgressRelay`: hands progress snapshots to the user's listener on a thread of its own, so a
//! slow listener never holds up the caller's dispatch loop (and through it the runners).
//!
//! Invariants:
//!
//! 1. Publishing never blocks on the listener: it replaces the latest snapshot under a mutex
//!    held only for the copy, and `try_send`s a wake-up into a channel of one (a wake-up already
//!    pending covers this snapshot too).
//! 2. The listener sees snapshots in order, possibly skipping some a newer one superseded; it
//!    always sees the last one published: after the sender is dropped the relay thread takes
//!    whatever is left before it exits.
//! 3. One relay thread per run with a listener, joined when the relay is dropped (the end of the
//!    run): thread counts never grow with keys, and when `fetch_*` returns the listener has
//!    seen the final snapshot.

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::{Progress, ProgressFn};
use crate::sync::{Arc, Mutex};

/// A listener on its own thread, fed the latest snapshot.
pub(super) struct ProgressRelay {
    latest: Arc<Mutex<Option<Progress>>>,
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The listener itself, called inline if the relay thread could not be started.
    inline: Option<Arc<ProgressFn>>,
}

impl ProgressRelay {
    /// Starts the relay thread for `listener`; if the OS refuses a thread, the listener is called
    /// inline instead (as before the relay existed), never dropped.
    pub(super) fn start(listener: Arc<ProgressFn>) -> ProgressRelay {
        let latest = Arc::new(Mutex::new(None));
        let (wake, woken) = crossbeam_channel::bounded(1);
        let spawned = {
            let (latest, listener) = (latest.clone(), listener.clone());
            thread::Builder::new()
                .name("tollgate-progress".to_string())
                .spawn(move || relay(&latest, &woken, &*listener))
        };
        match spawned {
            Ok(thread) => ProgressRelay {
                latest,
                wake: Some(wake),
                thread: Some(thread),
                inline: None,
            },
            Err(_) => ProgressRelay {
                latest,
                wake: None,
                thread: None,
                inline: Some(listener),
            },
        }
    }

    /// Hands `progress` to the listener without waiting for it (invariant 1).
    pub(super) fn publish(&self, progress: Progress) {
        if let Some(listener) = &self.inline {
            listener(&progress);
            return;
        }
        *self.latest.lock() = Some(progress);
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

/// The relay thread: one listener call per wake-up, on the latest snapshot (invariant 2).
fn relay(latest: &Mutex<Option<Progress>>, woken: &Receiver<()>, listener: &ProgressFn) {
    while woken.recv().is_ok() {
        let snapshot = latest.lock().take();
        if let Some(snapshot) = snapshot {
            listener(&snapshot);
        }
    }
    let last = latest.lock().take();
    if let Some(last) = last {
        listener(&last);
    }
}

impl Drop for ProgressRelay {
    /// Ends the relay after it has handed over the last snapshot (invariant 3).
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            // A listener's panic ends only its thread; the run's result stands.
            let _ = thread.join();
        }
    }
}
