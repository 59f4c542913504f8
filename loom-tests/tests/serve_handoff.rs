//! loom model of `tollgate serve`'s pool-to-loop hand-off (`cli/src/serve/http/event_loop.rs`,
//! `Completions`): a worker pushes its answer under the queue's mutex and wakes the loop only if
//! the queue was empty; the loop, after each wake, takes the whole queue. The claim: no answer is
//! ever stranded in the queue while the loop sleeps.
//!
//! The CLI (mio, sockets) cannot compile under loom, so the protocol is restated here line for
//! line, with the loop's `mio::Waker` (an eventfd: `wake` sets it, `poll` returns once it is set
//! and clears it) as a mutex-and-condvar flag. The model is the strictest case: nothing but the
//! waker ever wakes the loop (the real loop also wakes on socket events and timers).

#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

use loom_tests::{Arc, model, thread};

/// An eventfd used as a waker: a counter that `wait` consumes.
#[derive(Default)]
struct EventFd {
    set: Mutex<bool>,
    ready: Condvar,
}

impl EventFd {
    fn wake(&self) {
        *self.set.lock().unwrap() = true;
        self.ready.notify_one();
    }

    fn wait(&self) {
        let mut set = self.set.lock().unwrap();
        while !*set {
            set = self.ready.wait(set).unwrap();
        }
        *set = false;
    }
}

/// `Completions` as in `event_loop.rs`.
#[derive(Default)]
struct Completions {
    queue: Mutex<Vec<u32>>,
    waker: EventFd,
}

impl Completions {
    fn push(&self, done: u32) {
        let mut queue = self.queue.lock().unwrap();
        let was_empty = queue.is_empty();
        queue.push(done);
        drop(queue);
        if was_empty {
            self.waker.wake();
        }
    }

    fn take(&self) -> Vec<u32> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }
}

/// Two workers answer while the loop sleeps between takes: the loop gets both (a lost wake-up
/// would leave it asleep forever, which loom reports as a deadlock).
#[test]
fn two_workers_answers_always_reach_a_sleeping_loop() {
    model(|| {
        let completions = Arc::new(Completions::default());
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let completions = completions.clone();
                thread::spawn(move || completions.push(i))
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            completions.waker.wait();
            got.extend(completions.take());
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
        for worker in workers {
            worker.join().unwrap();
        }
    });
}

/// One worker answering twice while the loop takes in between: the second answer finds the
/// queue empty again and wakes the loop again.
#[test]
fn answers_after_a_take_wake_the_loop_again() {
    model(|| {
        let completions = Arc::new(Completions::default());
        let worker = {
            let completions = completions.clone();
            thread::spawn(move || {
                completions.push(0);
                completions.push(1);
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            completions.waker.wait();
            got.extend(completions.take());
        }
        assert_eq!(got, [0, 1]);
        worker.join().unwrap();
    });
}
