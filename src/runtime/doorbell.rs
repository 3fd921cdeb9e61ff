//! Waking a sleeping consumer thread only when it sleeps.
//!
//! A [`Doorbell`] sits next to a channel. The consumer announces that it is about to sleep
//! ([`Doorbell::prepare_sleep`]), checks the channel once more, and sleeps (a mio poll or a thread
//! park); producers push into the channel and then [`Doorbell::ring`], which costs a system call
//! only when the consumer announced a sleep. Under load the consumer rarely sleeps, so most
//! messages cost no wake-up at all.
//!
//! Why not the channel's own blocking `recv`: crossbeam spins and then calls `sched_yield` up to
//! four times before it parks; on a machine whose cores are all busy each yield is a context
//! switch, and that was a fifth of a worker's CPU time at 10,000 commands per second.
//!
//! Correctness is the Dekker pattern: the consumer stores `parked` then fences then looks at the
//! channel; a producer pushes then fences then looks at `parked`. At least one of them sees the
//! other's write, so a message is never left behind a sleeping consumer.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

enum Wake {
    Poll(mio::Waker),
    Thread(OnceLock<Thread>),
}

pub struct Doorbell {
    parked: AtomicBool,
    wake: Wake,
}

impl Doorbell {
    /// For a consumer sleeping in `mio::Poll::poll`.
    pub fn for_poll(waker: mio::Waker) -> Doorbell {
        Doorbell {
            parked: AtomicBool::new(false),
            wake: Wake::Poll(waker),
        }
    }

    /// For a consumer sleeping in [`Doorbell::sleep`]; it calls [`Doorbell::bind_current`] first.
    pub fn for_thread() -> Doorbell {
        Doorbell {
            parked: AtomicBool::new(false),
            wake: Wake::Thread(OnceLock::new()),
        }
    }

    /// Producer side, after pushing a message.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            match &self.wake {
                Wake::Poll(w) => {
                    let _ = w.wake();
                }
                Wake::Thread(t) => {
                    if let Some(t) = t.get() {
                        t.unpark();
                    }
                }
            }
        }
    }

    /// Consumer side: announces a sleep, then asks `nothing_pending` once more. True means go to
    /// sleep; false means work arrived meanwhile (the announcement is withdrawn).
    pub fn prepare_sleep(&self, nothing_pending: impl FnOnce() -> bool) -> bool {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if nothing_pending() {
            true
        } else {
            self.parked.store(false, Ordering::Relaxed);
            false
        }
    }

    /// Consumer side, after waking for whatever reason.
    pub fn woke(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Makes the calling thread the one [`Doorbell::ring`] unparks.
    pub fn bind_current(&self) {
        if let Wake::Thread(t) = &self.wake {
            let _ = t.set(std::thread::current());
        }
    }

    /// Thread consumers: [`Doorbell::prepare_sleep`], then park for at most `timeout` (forever
    /// with `None`). Returns when rung, timed out, or spuriously; callers loop.
    pub fn sleep(&self, timeout: Option<Duration>, nothing_pending: impl FnOnce() -> bool) {
        if self.prepare_sleep(nothing_pending) {
            match timeout {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
            self.woke();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_message_is_left_behind_a_sleeping_thread() {
        let (tx, rx) = crossbeam_channel::bounded::<u32>(1024);
        let bell = Arc::new(Doorbell::for_thread());
        let b2 = bell.clone();
        let consumer = std::thread::spawn(move || {
            b2.bind_current();
            let mut got = 0u32;
            while got < 200_000 {
                match rx.try_recv() {
                    Ok(_) => got += 1,
                    // No timeout: a lost wake-up would hang this test.
                    Err(_) => b2.sleep(None, || rx.is_empty()),
                }
            }
            got
        });
        for i in 0..200_000u32 {
            while tx.try_send(i).is_err() {
                bell.ring();
                std::thread::yield_now();
            }
            bell.ring();
            if i % 1000 == 0 {
                // Let the consumer drain and fall asleep now and then.
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        assert_eq!(consumer.join().unwrap(), 200_000);
    }
}
