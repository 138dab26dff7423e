//! The replayer's state, shared with those who watch it without waiting for a sync in
//! progress: the store's status, `wait_synced`, and status subscribers.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::format::Lsn;
use crate::replay::state::ReplayState;

/// A listener called after every change of the state (outside the state's lock).
type Listener = Box<dyn Fn() + Send + Sync>;

/// The replayer's [`ReplayState`] behind a lock, with a condition variable signalled on every
/// change.
pub(crate) struct Watch {
    state: Mutex<ReplayState>,
    changed: Condvar,
    listeners: Mutex<Vec<Listener>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watch {
    pub(crate) fn new(state: ReplayState) -> Watch {
        Watch {
            state: Mutex::new(state),
            changed: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// A copy of the state now.
    pub(crate) fn get(&self) -> ReplayState {
        lock(&self.state).clone()
    }

    /// Changes the state, wakes waiters and calls the listeners.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut ReplayState) -> T) -> T {
        let out = {
            let mut s = lock(&self.state);
            let out = f(&mut s);
            self.changed.notify_all();
            out
        };
        for l in lock(&self.listeners).iter() {
            l();
        }
        out
    }

    /// Calls `f` after every change from now on.
    pub(crate) fn listen(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.listeners).push(Box::new(f));
    }

    /// Waits until the target's watermark, as read or committed by the replayer, covers `lsn`,
    /// or `timeout` passes. Returns whether it does.
    pub(crate) fn wait_target(&self, lsn: Lsn, timeout: Duration) -> bool {
        // A timeout too large for the clock (`Duration::MAX`) means "no deadline".
        let deadline = Instant::now().checked_add(timeout);
        let mut s = lock(&self.state);
        loop {
            if s.target_lsn.is_some_and(|t| t >= lsn) {
                return true;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return false,
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_timeout_past_the_clock_s_range_waits_instead_of_panicking() {
        let w = Arc::new(Watch::new(ReplayState::default()));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || w2.wait_target(5, Duration::MAX));
        std::thread::sleep(Duration::from_millis(50));
        w.update(|s| s.observed(5));
        assert!(t.join().expect("no panic"));
    }
}
