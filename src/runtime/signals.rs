//! SIGTERM and SIGINT ask for a graceful shutdown ([`super::Gateway::wait`] carries it out: stop
//! reading UDP, let the workers finish what is queued and write their state, flush MQTT); a
//! second one while stopping ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    if TERMINATE.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe; the operator asked twice.
        unsafe { libc::_exit(130) };
    }
}

/// Routes SIGTERM and SIGINT to [`terminate_requested`] instead of ending the process.
pub(super) fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_terminate as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                warn!("cannot install the handler of signal {sig}: it ends the process without saving state");
            }
        }
    }
}

pub(super) fn terminate_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}
