//! Socket options the embedded broker does not set for itself.
//!
//! rumqttd binds and accepts its TCP sockets internally and never sets `TCP_NODELAY`, so every
//! small packet it writes (a command to the gateway, an event to a subscriber) can wait behind
//! Nagle's algorithm for the peer's delayed ACK: about 20 to 40 ms per hop on Linux loopback.
//! Linux copies `TCP_NODELAY` from a listening socket to the sockets it accepts, so setting it
//! once on the broker's listener, in our own process, fixes every later connection.
//!
//! This borrows the broker's file descriptors, found through `/proc/self/fd`, which needs unsafe;
//! the descriptors are only inspected and configured, never closed.

use std::net::SocketAddr;

/// Calls `f` for every TCP socket of this process whose local address is `addr`: a listener
/// bound there and the connections it accepted.
#[cfg(target_os = "linux")]
fn for_each_tcp_bound_to(addr: SocketAddr, mut f: impl FnMut(socket2::SockRef<'_>)) {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only passed to getsockname/getsockopt/setsockopt, which fail
        // with EBADF or ENOTSOCK if it was closed or is not a socket. Should it have been closed
        // and reused meanwhile, the address check still limits `f` to sockets bound to `addr`.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        let bound_here = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == addr);
        if bound_here && sock.r#type().ok() == Some(socket2::Type::STREAM) {
            f(sock);
        }
    }
}

/// Sets `TCP_NODELAY` on every TCP socket of this process bound to `addr`. Returns how many.
pub fn set_nodelay_on_local(addr: SocketAddr) -> usize {
    let mut set = 0;
    #[cfg(target_os = "linux")]
    for_each_tcp_bound_to(addr, |s| set += usize::from(s.set_nodelay(true).is_ok()));
    #[cfg(not(target_os = "linux"))]
    let _ = addr;
    set
}

/// `TCP_NODELAY` of every TCP socket of this process bound to `addr`, listener included.
pub fn nodelay_of_local(addr: SocketAddr) -> Vec<bool> {
    let mut out = Vec::new();
    #[cfg(target_os = "linux")]
    for_each_tcp_bound_to(addr, |s| out.extend(s.nodelay().ok()));
    #[cfg(not(target_os = "linux"))]
    let _ = addr;
    out
}
