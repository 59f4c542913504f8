//! Changing a semaphore's size: growing now, shrinking as permits come back (never revoking a
//! held permit), and forgetting held permits (invariants 3 and 6 of the parent module).

use super::{ResizeError, Semaphore};

impl Semaphore {
    /// Adds `n` permits to the capacity. They pay off a pending shrink first, then go to the
    /// waiters at the head of the queue, then become free.
    ///
    /// Fails with [`ResizeError::AboveMax`] (changing nothing) if the capacity would pass
    /// [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// # Errors
    ///
    /// [`ResizeError::AboveMax`] if the capacity would pass [`Semaphore::MAX_PERMITS`]; nothing
    /// changes.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(1);
    /// semaphore.add_permits(2).unwrap();
    /// assert_eq!((semaphore.capacity(), semaphore.available()), (3, 3));
    /// ```
    pub fn add_permits(&self, n: usize) -> Result<(), ResizeError> {
        self.locked(|s| {
            let capacity = s.queue.capacity;
            match capacity.checked_add(n) {
                Some(total) if total <= Self::MAX_PERMITS => s.queue.capacity = total,
                _ => {
                    return Err(ResizeError::AboveMax {
                        capacity,
                        added: n,
                        max: Self::MAX_PERMITS,
                    });
                }
            }
            s.give_back(n);
            Ok(())
        })
    }

    /// Removes `n` permits from the capacity. Free permits go at once; the rest are taken as
    /// held permits come back (a held permit is never revoked). Waiters asking for more than the
    /// new capacity fail with [`AcquireError::TooLarge`](super::AcquireError::TooLarge).
    ///
    /// Fails with [`ResizeError::BelowZero`] (changing nothing) if `n` is more than the capacity.
    ///
    /// # Errors
    ///
    /// [`ResizeError::BelowZero`] if `n` is more than the capacity; nothing changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::Semaphore;
    ///
    /// let semaphore = Semaphore::new(4);
    /// let held = semaphore.try_acquire(3).unwrap();
    /// semaphore.remove_permits(2).unwrap();
    /// assert_eq!((semaphore.capacity(), semaphore.available()), (2, 0));
    /// drop(held); // 3 come back: 1 pays the rest of the shrink
    /// assert_eq!(semaphore.available(), 2);
    /// ```
    pub fn remove_permits(&self, n: usize) -> Result<(), ResizeError> {
        self.locked(|s| {
            let capacity = s.queue.capacity;
            if n > capacity {
                return Err(ResizeError::BelowZero {
                    capacity,
                    removed: n,
                });
            }
            s.shrink(n);
            Ok(())
        })
    }

    /// Sets the capacity to `permits`, growing now or shrinking as permits come back (see
    /// [`add_permits`](Self::add_permits) and [`remove_permits`](Self::remove_permits)).
    ///
    /// # Errors
    ///
    /// [`ResizeError::AboveMax`] if `permits` is above [`Semaphore::MAX_PERMITS`]; nothing
    /// changes.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(4);
    /// semaphore.set_capacity(10).unwrap();
    /// semaphore.set_capacity(1).unwrap();
    /// assert_eq!(semaphore.capacity(), 1);
    /// assert!(semaphore.set_capacity(usize::MAX).is_err());
    /// ```
    pub fn set_capacity(&self, permits: usize) -> Result<(), ResizeError> {
        // One lock so that a concurrent resize cannot slip between reading and changing.
        self.locked(|s| {
            let capacity = s.queue.capacity;
            if permits > Self::MAX_PERMITS {
                return Err(ResizeError::AboveMax {
                    capacity,
                    added: permits - capacity,
                    max: Self::MAX_PERMITS,
                });
            }
            if permits >= capacity {
                s.queue.capacity = permits;
                s.give_back(permits - capacity);
            } else {
                s.shrink(capacity - permits);
            }
            Ok(())
        })
    }

    /// Removes `n` held permits from the semaphore for good ([`Permit::forget`]): they pay a
    /// pending shrink first, then lower the capacity.
    pub(crate) fn forget(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.locked(|s| {
            let paid = n.min(s.queue.debt);
            s.queue.debt -= paid;
            s.queue.capacity -= n - paid;
            s.refuse_too_large();
        });
    }
}
