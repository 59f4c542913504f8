//! Unit tests of the semaphore's bookkeeping (state word, debt); the public behaviour is tested
//! in `tests/semaphore.rs`.

use super::*;

fn state(semaphore: &Semaphore) -> (usize, bool, bool) {
    let state = semaphore.state.load(Ordering::SeqCst);
    (state >> SHIFT, state & CLOSED != 0, state & SLOW != 0)
}

#[test]
fn slow_bit_follows_queue_and_debt() {
    let semaphore = Semaphore::new(2);
    assert_eq!(state(&semaphore), (2, false, false));
    let held = semaphore.try_acquire(2).unwrap();
    semaphore.remove_permits(1).unwrap();
    assert_eq!(
        state(&semaphore),
        (0, false, true),
        "debt keeps releases locked"
    );
    assert_eq!(semaphore.queue.lock().debt, 1);
    drop(held);
    assert_eq!(
        state(&semaphore),
        (1, false, false),
        "debt paid: fast again"
    );
    assert_eq!(semaphore.queue.lock().debt, 0);
}

#[test]
fn add_pays_debt_first() {
    let semaphore = Semaphore::new(4);
    let held = semaphore.try_acquire(4).unwrap();
    semaphore.remove_permits(3).unwrap();
    semaphore.add_permits(2).unwrap();
    assert_eq!(semaphore.queue.lock().debt, 1);
    assert_eq!((semaphore.capacity(), semaphore.available()), (3, 0));
    drop(held);
    assert_eq!((semaphore.capacity(), semaphore.available()), (3, 3));
}

#[test]
fn forget_pays_debt_before_lowering_capacity() {
    let semaphore = Semaphore::new(10);
    let mut held = semaphore.try_acquire(10).unwrap();
    semaphore.remove_permits(8).unwrap();
    held.split(5).unwrap().forget();
    assert_eq!(semaphore.queue.lock().debt, 3);
    assert_eq!(semaphore.capacity(), 2);
    drop(held);
    assert_eq!((semaphore.capacity(), semaphore.available()), (2, 2));
    assert!(!state(&semaphore).2);
}

#[test]
fn close_sets_the_bit_and_keeps_permits() {
    let semaphore = Semaphore::new(3);
    let held = semaphore.try_acquire(1).unwrap();
    semaphore.close();
    assert_eq!(state(&semaphore), (2, true, false));
    drop(held);
    assert_eq!(state(&semaphore), (3, true, false));
}

#[test]
fn new_clamps_and_try_new_refuses() {
    assert_eq!(
        Semaphore::new(usize::MAX).capacity(),
        Semaphore::MAX_PERMITS
    );
    assert!(Semaphore::try_new(Semaphore::MAX_PERMITS).is_ok());
    assert_eq!(
        Semaphore::try_new(Semaphore::MAX_PERMITS + 1).unwrap_err(),
        ResizeError::AboveMax {
            capacity: 0,
            added: Semaphore::MAX_PERMITS + 1,
            max: Semaphore::MAX_PERMITS
        }
    );
}

#[test]
fn max_capacity_round_trips_without_overflow() {
    let semaphore = Semaphore::new(Semaphore::MAX_PERMITS);
    let all = semaphore.try_acquire(Semaphore::MAX_PERMITS).unwrap();
    assert_eq!(semaphore.available(), 0);
    drop(all);
    assert_eq!(semaphore.available(), Semaphore::MAX_PERMITS);
    assert!(semaphore.add_permits(1).is_err());
    assert_eq!(semaphore.capacity(), Semaphore::MAX_PERMITS);
}

#[test]
fn permits_and_semaphores_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Semaphore>();
    send_sync::<Permit<'static>>();
    send_sync::<OwnedPermit>();
    send_sync::<AcquireError>();
}
