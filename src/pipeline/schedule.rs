//! Which layer a free worker walks or hashes next.
//!
//! The stream needs layers in order, and a layer can be hashed only once it
//! is walked. Walks come first, so that long walks (trees of many small
//! files) overlap with hashing the layers already walked; but the layer the
//! stream is waiting for is hashed as soon as it can be. Among the walked
//! layers, the one after it comes next, then the largest: long jobs start
//! early, so the run ends soon after the last byte of the largest layer is
//! hashed, and the stream rarely waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Work for the pool.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    /// Walk this layer's store paths.
    Walk(usize),
    /// Hash this layer.
    Hash(usize),
}

/// Decides what a free worker does next.
pub struct Schedule {
    state: Mutex<ScheduleState>,
    changed: Condvar,
    streaming: AtomicUsize,
}

struct ScheduleState {
    walk_taken: Vec<bool>,
    /// Estimated size of each layer once walked.
    walked: Vec<Option<u64>>,
    hash_taken: Vec<bool>,
    stopped: bool,
}

impl Schedule {
    /// A schedule for `n` layers, none walked yet.
    pub fn new(n: usize) -> Self {
        Schedule {
            state: Mutex::new(ScheduleState {
                walk_taken: vec![false; n],
                walked: vec![None; n],
                hash_taken: vec![false; n],
                stopped: false,
            }),
            changed: Condvar::new(),
            streaming: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScheduleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the schedule which layer the stream needs now.
    pub fn streaming(&self, index: usize) {
        self.streaming.store(index, Ordering::Relaxed);
    }

    /// Records that a layer is walked, with its estimated size.
    pub fn walked(&self, index: usize, estimate: u64) {
        self.lock().walked[index] = Some(estimate);
        self.changed.notify_all();
    }

    /// Takes a layer off the walks, as walked, with its size: a layer
    /// known from its record that is walked only if its bytes are wanted.
    pub fn skip_walk(&self, index: usize, size: u64) {
        let mut st = self.lock();
        st.walk_taken[index] = true;
        st.walked[index] = Some(size);
        drop(st);
        self.changed.notify_all();
    }

    /// Makes every worker stop at its next request.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// The next job, waiting while only unfinished walks stand in the way;
    /// `None` when there is nothing left or the run stopped.
    pub fn next(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if st.stopped {
                return None;
            }
            let at = self.streaming.load(Ordering::Relaxed);
            let hashable = |st: &ScheduleState, i: usize| {
                i < st.walked.len() && st.walked[i].is_some() && !st.hash_taken[i]
            };
            let job = if hashable(&st, at) {
                Some(Job::Hash(at))
            } else if let Some(i) = st.walk_taken.iter().position(|t| !t) {
                Some(Job::Walk(i))
            } else if hashable(&st, at + 1) {
                Some(Job::Hash(at + 1))
            } else {
                (0..st.walked.len())
                    .filter(|&i| hashable(&st, i))
                    .max_by_key(|&i| (st.walked[i], std::cmp::Reverse(i)))
                    .map(Job::Hash)
            };
            match job {
                Some(Job::Walk(i)) => {
                    st.walk_taken[i] = true;
                    return Some(Job::Walk(i));
                }
                Some(Job::Hash(i)) => {
                    st.hash_taken[i] = true;
                    return Some(Job::Hash(i));
                }
                None if st.walked.iter().any(Option::is_none) => {
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &Schedule) -> Vec<Job> {
        std::iter::from_fn(|| s.next()).collect()
    }

    #[test]
    fn walks_first_then_streamed_layer_then_largest() {
        let s = Schedule::new(3);
        assert!(matches!(s.next(), Some(Job::Walk(0))));
        s.walked(0, 10);
        // Layer 0 is what the stream waits for: hash it before walking on.
        assert!(matches!(s.next(), Some(Job::Hash(0))));
        assert!(matches!(s.next(), Some(Job::Walk(1))));
        assert!(matches!(s.next(), Some(Job::Walk(2))));
        s.walked(2, 1000);
        s.walked(1, 5);
        // The stream still needs 0; 1 is next in line, then the largest.
        assert!(matches!(s.next(), Some(Job::Hash(1))));
        assert!(matches!(s.next(), Some(Job::Hash(2))));
        assert!(s.next().is_none());
    }

    #[test]
    fn largest_first_when_the_stream_is_served() {
        let s = Schedule::new(4);
        for i in 0..4 {
            assert!(matches!(s.next(), Some(Job::Walk(j)) if j == i));
        }
        for (i, size) in [(0, 1), (1, 2), (2, 300), (3, 40)] {
            s.walked(i, size);
        }
        let order: Vec<usize> = drain(&s)
            .into_iter()
            .map(|j| match j {
                Job::Hash(i) => i,
                Job::Walk(_) => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
        let s = Schedule::new(4);
        drain_walks(&s, &[(0, 1), (1, 2), (2, 300), (3, 40)]);
        s.streaming(1);
        assert!(matches!(s.next(), Some(Job::Hash(1))));
        assert!(matches!(s.next(), Some(Job::Hash(2))));
        assert!(matches!(s.next(), Some(Job::Hash(3))));
        assert!(matches!(s.next(), Some(Job::Hash(0))));
    }

    fn drain_walks(s: &Schedule, sizes: &[(usize, u64)]) {
        for _ in sizes {
            assert!(matches!(s.next(), Some(Job::Walk(_))));
        }
        for &(i, size) in sizes {
            s.walked(i, size);
        }
    }

    #[test]
    fn a_waiting_worker_wakes_when_a_walk_ends() {
        let s = std::sync::Arc::new(Schedule::new(1));
        assert!(matches!(s.next(), Some(Job::Walk(0))));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.next())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.walked(0, 1);
        assert!(matches!(waiter.join().unwrap(), Some(Job::Hash(0))));
    }

    #[test]
    fn stop_wakes_waiting_workers() {
        let s = std::sync::Arc::new(Schedule::new(1));
        assert!(matches!(s.next(), Some(Job::Walk(0))));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.next())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.stop();
        assert!(waiter.join().unwrap().is_none());
    }
}
