//! Batched UDP I/O for the shells: `sendmmsg(2)` / `recvmmsg(2)` on Linux, so a worker flushing
//! many replies, or the event loop draining a burst, pays one system call per batch instead of one
//! per datagram. Other platforms fall back to one `send_to` / `recv_from` per datagram.
//!
//! The only unsafe code of the gateway lives here: building the `mmsghdr` arrays for the kernel.
//! Every pointer handed over points into buffers that outlive the call.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Sends `datagrams` (bytes, destination) from `sock`, retrying briefly on a full socket buffer.
/// Returns how many were sent; the rest could not be (counted by the caller as send errors).
pub fn send_batch(sock: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> usize {
    #[cfg(target_os = "linux")]
    {
        linux::send_batch(sock, datagrams)
    }
    #[cfg(not(target_os = "linux"))]
    {
        datagrams
            .iter()
            .filter(|(b, a)| send_one(sock, b, *a))
            .count()
    }
}

/// Receive buffers for [`RecvBatch::recv`]: up to [`RECV_BATCH`] datagrams per system call.
pub struct RecvBatch {
    #[cfg(target_os = "linux")]
    inner: linux::RecvBatch,
    #[cfg(not(target_os = "linux"))]
    buf: Vec<u8>,
    #[cfg(not(target_os = "linux"))]
    last: Option<(usize, SocketAddr)>,
}

/// Datagrams taken per `recvmmsg(2)`.
pub const RECV_BATCH: usize = 32;

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            #[cfg(target_os = "linux")]
            inner: linux::RecvBatch::new(),
            #[cfg(not(target_os = "linux"))]
            buf: vec![0; 65536],
            #[cfg(not(target_os = "linux"))]
            last: None,
        }
    }

    /// Receives what `sock` (non-blocking) has queued, up to [`RECV_BATCH`] datagrams; `WouldBlock`
    /// when nothing is. Datagram `i < n` is then [`RecvBatch::get`]`(i)`.
    pub fn recv(&mut self, sock: &mio::net::UdpSocket) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            self.inner.recv(sock)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (n, a) = sock.recv_from(&mut self.buf)?;
            self.last = Some((n, a));
            Ok(1)
        }
    }

    /// Bytes and source of datagram `i` of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        #[cfg(target_os = "linux")]
        {
            self.inner.get(i)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (n, a) = self.last.filter(|_| i == 0)?;
            Some((&self.buf[..n], a))
        }
    }
}

#[allow(dead_code)]
fn send_one(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
    for _ in 0..3 {
        match sock.send_to(bytes, to) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;

    /// At most this many datagrams per system call.
    const BATCH: usize = 64;

    /// Largest UDP payload: a datagram is never truncated.
    const MAX_DATAGRAM: usize = 65536;

    pub struct RecvBatch {
        bufs: Vec<u8>,
        addrs: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
        received: usize,
    }

    // SAFETY: the raw pointers in `iovs` and `msgs` point only into this struct's own heap
    // buffers, which move with it between threads.
    unsafe impl Send for RecvBatch {}

    impl RecvBatch {
        pub fn new() -> RecvBatch {
            let n = super::RECV_BATCH;
            let mut bufs = vec![0u8; n * MAX_DATAGRAM];
            // SAFETY: sockaddr_storage and mmsghdr are plain data; all-zero is valid.
            let mut addrs: Vec<libc::sockaddr_storage> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            let mut iovs: Vec<libc::iovec> = bufs
                .chunks_mut(MAX_DATAGRAM)
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (i, m) in msgs.iter_mut().enumerate() {
                m.msg_hdr.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
            }
            // The Vecs' heap buffers never move or grow, so the pointers stay valid.
            RecvBatch {
                bufs,
                addrs,
                iovs,
                msgs,
                received: 0,
            }
        }

        pub fn recv(&mut self, sock: &mio::net::UdpSocket) -> io::Result<usize> {
            self.received = 0;
            for m in &mut self.msgs {
                m.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_flags = 0;
                m.msg_len = 0;
            }
            debug_assert_eq!(self.iovs.len(), self.msgs.len());
            // SAFETY: every header points into `addrs`, `iovs` and `bufs`, owned by self and
            // alive for the call; the kernel writes at most the lengths given.
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    self.msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            self.received = r as usize;
            Ok(self.received)
        }

        pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
            if i >= self.received {
                return None;
            }
            let m = &self.msgs[i];
            // SAFETY: the kernel filled `addrs[i]` with `msg_namelen` bytes of a socket address.
            let addr = unsafe { SockAddr::new(self.addrs[i], m.msg_hdr.msg_namelen) };
            let addr = addr.as_socket()?;
            let len = (m.msg_len as usize).min(MAX_DATAGRAM);
            Some((&self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len], addr))
        }
    }

    pub fn send_batch(sock: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> usize {
        let mut sent = 0;
        for chunk in datagrams.chunks(BATCH) {
            sent += send_chunk(sock, chunk);
        }
        sent
    }

    fn send_chunk(sock: &UdpSocket, chunk: &[(&[u8], SocketAddr)]) -> usize {
        let addrs: Vec<SockAddr> = chunk.iter().map(|(_, a)| SockAddr::from(*a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(b, _)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = addrs[i].len();
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        let mut stalls = 0;
        while done < msgs.len() {
            // SAFETY: msgs[done..] are initialised headers whose name and iov pointers point into
            // `addrs`, `iovs` and the caller's datagrams, all alive until we return.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if stalls < 3 => {
                    stalls += 1;
                    std::thread::yield_now();
                }
                // Socket buffer still full: the rest is dropped (CoAP retransmits).
                io::ErrorKind::WouldBlock => break,
                // This datagram cannot be sent (unreachable, too large...): skip it, send the rest.
                _ => {
                    log::debug!("sendmmsg to {}: {e}", chunk[done].1);
                    return done + send_chunk_rest(sock, &chunk[done + 1..]);
                }
            }
        }
        done
    }

    fn send_chunk_rest(sock: &UdpSocket, rest: &[(&[u8], SocketAddr)]) -> usize {
        if rest.is_empty() {
            0
        } else {
            send_chunk(sock, rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_batch_takes_many_datagrams_per_call_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let rx = mio::net::UdpSocket::from_std(rx);
        let tx: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // 40 datagrams, more than one batch, one of them as large as UDP allows on loopback.
        let big = vec![7u8; 65507];
        for i in 0..40usize {
            let p: &[u8] = if i == 5 { &big } else { &[i as u8; 3] };
            tx[i % 2].send_to(p, to).unwrap();
        }
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            match batch.recv(&rx) {
                Ok(n) => {
                    assert!(n <= RECV_BATCH);
                    for i in 0..n {
                        let (b, a) = batch.get(i).unwrap();
                        got.push((b.to_vec(), a));
                    }
                    assert!(batch.get(n).is_none());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        for (i, (b, a)) in got.iter().enumerate() {
            assert_eq!(*a, tx[i % 2].local_addr().unwrap());
            if i == 5 {
                assert_eq!(b, &big);
            } else {
                assert_eq!(b, &vec![i as u8; 3]);
            }
        }
    }

    #[test]
    fn batch_reaches_every_destination() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let payloads: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 1 + i as usize]).collect();
        let batch: Vec<(&[u8], SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), rx[i % 3].local_addr().unwrap()))
            .collect();
        assert_eq!(send_batch(&tx, &batch), 150);
        for (i, r) in rx.iter().enumerate() {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 512];
            for k in (i..150).step_by(3) {
                let (n, from) = r.recv_from(&mut buf).unwrap();
                assert_eq!((n, from), (1 + k, tx.local_addr().unwrap()));
                assert!(buf[..n].iter().all(|b| *b == k as u8));
            }
        }
    }
}
