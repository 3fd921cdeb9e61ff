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
