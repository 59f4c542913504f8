//! RAII permits: [`Permit`] borrows its semaphore, [`OwnedPermit`] holds an `Arc` of it. Both
//! return their permits when dropped.

use std::fmt;
use std::sync::Arc as StdArc;

use super::Semaphore;

/// Permits acquired from a [`Semaphore`], given back when dropped.
///
/// # Examples
///
/// ```
/// use tollgate::Semaphore;
///
/// let semaphore = Semaphore::new(3);
/// {
///     let permit = semaphore.try_acquire(2).unwrap();
///     assert_eq!(permit.count(), 2);
///     assert_eq!(semaphore.available(), 1);
/// }
/// assert_eq!(semaphore.available(), 3);
/// ```
#[must_use = "dropping a Permit releases its permits at once"]
pub struct Permit<'a> {
    semaphore: &'a Semaphore,
    count: usize,
}

impl<'a> Permit<'a> {
    pub(super) fn new(semaphore: &'a Semaphore, count: usize) -> Self {
        Permit { semaphore, count }
    }

    /// How many permits this holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(4);
    /// assert_eq!(semaphore.try_acquire(3).unwrap().count(), 3);
    /// ```
    pub fn count(&self) -> usize {
        self.count
    }

    /// The semaphore the permits came from.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(1);
    /// let permit = semaphore.try_acquire(1).unwrap();
    /// assert!(std::ptr::eq(permit.semaphore(), &semaphore));
    /// ```
    pub fn semaphore(&self) -> &'a Semaphore {
        self.semaphore
    }

    /// Keeps the permits out of the semaphore for good: its capacity shrinks by
    /// [`count`](Self::count) (paying off a pending shrink first) instead of the permits
    /// coming back.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(3);
    /// semaphore.try_acquire(2).unwrap().forget();
    /// assert_eq!((semaphore.capacity(), semaphore.available()), (1, 1));
    /// ```
    pub fn forget(mut self) {
        self.semaphore.forget(std::mem::take(&mut self.count));
    }

    /// Moves `n` of this permit's permits into a new `Permit`; `None` (changing nothing) if it
    /// holds fewer than `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(5);
    /// let mut permit = semaphore.try_acquire(5).unwrap();
    /// let part = permit.split(2).unwrap();
    /// assert_eq!((permit.count(), part.count()), (3, 2));
    /// assert!(permit.split(4).is_none());
    /// drop(part);
    /// assert_eq!(semaphore.available(), 2);
    /// ```
    pub fn split(&mut self, n: usize) -> Option<Permit<'a>> {
        self.count = self.count.checked_sub(n)?;
        Some(Permit::new(self.semaphore, n))
    }

    /// Adds `other`'s permits to this one. Fails, giving `other` back, if it comes from another
    /// semaphore.
    ///
    /// # Errors
    ///
    /// `other` back, unmerged, if it belongs to another semaphore.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(3);
    /// let mut permit = semaphore.try_acquire(1).unwrap();
    /// permit.merge(semaphore.try_acquire(2).unwrap()).unwrap();
    /// assert_eq!(permit.count(), 3);
    /// ```
    pub fn merge(&mut self, mut other: Permit<'a>) -> Result<(), Permit<'a>> {
        if !std::ptr::eq(self.semaphore, other.semaphore) {
            return Err(other);
        }
        self.count += std::mem::take(&mut other.count);
        Ok(())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.semaphore.release(self.count);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Permits acquired from an `Arc<Semaphore>`, given back when dropped. Owns a handle on the
/// semaphore, so it can move to another thread (a worker that releases when done).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use tollgate::{CancelToken, Semaphore};
///
/// let semaphore = Arc::new(Semaphore::new(1));
/// let permit = semaphore.acquire_owned(1, CancelToken::never()).unwrap();
/// let worker = std::thread::spawn(move || {
///     let _permit = permit; // released when the work is done
/// });
/// worker.join().unwrap();
/// assert_eq!(semaphore.available(), 1);
/// ```
#[must_use = "dropping an OwnedPermit releases its permits at once"]
pub struct OwnedPermit {
    semaphore: StdArc<Semaphore>,
    count: usize,
}

impl OwnedPermit {
    pub(super) fn new(semaphore: StdArc<Semaphore>, count: usize) -> Self {
        OwnedPermit { semaphore, count }
    }

    /// How many permits this holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = std::sync::Arc::new(tollgate::Semaphore::new(4));
    /// assert_eq!(semaphore.try_acquire_owned(3).unwrap().count(), 3);
    /// ```
    pub fn count(&self) -> usize {
        self.count
    }

    /// The semaphore the permits came from.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let semaphore = Arc::new(tollgate::Semaphore::new(1));
    /// let permit = semaphore.try_acquire_owned(1).unwrap();
    /// assert!(Arc::ptr_eq(permit.semaphore(), &semaphore));
    /// ```
    pub fn semaphore(&self) -> &StdArc<Semaphore> {
        &self.semaphore
    }

    /// Keeps the permits out of the semaphore for good (see [`Permit::forget`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = std::sync::Arc::new(tollgate::Semaphore::new(3));
    /// semaphore.try_acquire_owned(1).unwrap().forget();
    /// assert_eq!(semaphore.capacity(), 2);
    /// ```
    pub fn forget(mut self) {
        self.semaphore.forget(std::mem::take(&mut self.count));
    }

    /// Moves `n` of this permit's permits into a new `OwnedPermit`; `None` (changing nothing)
    /// if it holds fewer than `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = std::sync::Arc::new(tollgate::Semaphore::new(4));
    /// let mut permit = semaphore.try_acquire_owned(4).unwrap();
    /// let part = permit.split(1).unwrap();
    /// assert_eq!((permit.count(), part.count()), (3, 1));
    /// ```
    pub fn split(&mut self, n: usize) -> Option<OwnedPermit> {
        self.count = self.count.checked_sub(n)?;
        Some(OwnedPermit::new(self.semaphore.clone(), n))
    }

    /// Adds `other`'s permits to this one. Fails, giving `other` back, if it comes from another
    /// semaphore.
    ///
    /// # Errors
    ///
    /// `other` back, unmerged, if it belongs to another semaphore.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::Semaphore;
    ///
    /// let (a, b) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(2)));
    /// let mut permit = a.try_acquire_owned(1).unwrap();
    /// assert!(permit.merge(b.try_acquire_owned(1).unwrap()).is_err());
    /// permit.merge(a.try_acquire_owned(1).unwrap()).unwrap();
    /// assert_eq!(permit.count(), 2);
    /// ```
    pub fn merge(&mut self, mut other: OwnedPermit) -> Result<(), OwnedPermit> {
        if !StdArc::ptr_eq(&self.semaphore, &other.semaphore) {
            return Err(other);
        }
        self.count += std::mem::take(&mut other.count);
        Ok(())
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.semaphore.release(self.count);
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}
