//! Device-side UDP transports.
//!
//! * [`Pktinfo`] (Linux, IPv4 loopback): one UDP socket bound to `0.0.0.0:PORT` with `IP_PKTINFO`.
//!   Every datagram goes out with an `in_pktinfo` control message whose `ipi_spec_dst` is the
//!   device's own address in 127/8 ([`device_ip`]), and every datagram that comes in tells through
//!   its `in_pktinfo.ipi_addr` which device the gateway addressed. Sends and receives are batched
//!   with `sendmmsg`/`recvmmsg`. One socket serves up to 16.6 million devices.
//! * [`Sockets`]: the fallback, one nonblocking socket per device polled with mio (bounded by the
//!   open-files limit). Used for IPv6 or remote gateways, or when `IP_PKTINFO` does not work.
//!
//! Devices are global indices `0..n`; with several I/O threads, thread `t` of `T` owns the devices
//! `i` with `i % T == t`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;
pub const RX_BUF: usize = 2048;
/// Devices addressable from 127.1.0.0 to 127.254.255.255.
pub const MAX_PKTINFO_DEVICES: usize = 254 * 65536;

/// Device `i` -> 127.(1 + i/65536).(i/256 % 256).(i % 256).
pub fn device_ip(i: u32) -> Ipv4Addr {
    let a = 1 + (i >> 16) % 254;
    Ipv4Addr::new(127, a as u8, (i >> 8) as u8, i as u8)
}

/// Inverse of [`device_ip`] (address in host byte order).
pub fn device_of_ip(ip: u32) -> Option<u32> {
    if ip >> 24 != 127 {
        return None;
    }
    let a = (ip >> 16) & 0xff;
    if a == 0 || a == 255 {
        return None;
    }
    Some(((a - 1) << 16) | (ip & 0xffff))
}

/// Received datagrams of one batch: `(device, length)` and their bytes.
pub struct RxBatch {
    pub bufs: Vec<[u8; RX_BUF]>,
    pub meta: Vec<(u32, usize)>,
}

impl RxBatch {
    pub fn new() -> Self {
        RxBatch {
            bufs: vec![[0u8; RX_BUF]; BATCH],
            meta: Vec::with_capacity(BATCH),
        }
    }
    pub fn get(&self, i: usize) -> (u32, &[u8]) {
        let (dev, len) = self.meta[i];
        (dev, &self.bufs[i][..len])
    }
}

/// Datagrams to send, each from one device; buffers are reused across batches.
pub struct TxBatch {
    items: Vec<(u32, Vec<u8>)>,
    n: usize,
}

impl TxBatch {
    pub fn new() -> Self {
        TxBatch {
            items: Vec::new(),
            n: 0,
        }
    }
    /// A cleared buffer for a datagram from `dev`.
    pub fn push(&mut self, dev: u32) -> &mut Vec<u8> {
        if self.n == self.items.len() {
            self.items.push((dev, Vec::with_capacity(256)));
        }
        let item = &mut self.items[self.n];
        self.n += 1;
        item.0 = dev;
        item.1.clear();
        &mut item.1
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn items(&self) -> &[(u32, Vec<u8>)] {
        &self.items[..self.n]
    }
    pub fn clear(&mut self) {
        self.n = 0;
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub struct SendOutcome {
    pub errors: u64,
    pub eagain: u64,
}

pub trait Transport {
    /// Nonblocking: fills `rx` with up to [`BATCH`] datagrams; returns how many.
    fn recv(&mut self, rx: &mut RxBatch) -> usize;
    /// Sends every datagram of `tx` to the gateway and clears it.
    fn send(&mut self, tx: &mut TxBatch) -> SendOutcome;
    /// Waits until a datagram may be readable or `timeout` passed.
    fn wait(&mut self, timeout: Duration);
}

fn set_buffers(fd: i32, bytes: i32) {
    // SO_*BUFFORCE (root/CAP_NET_ADMIN) passes net.core.[rw]mem_max; the plain ones are capped.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = bytes;
        let p = &v as *const i32 as *const libc::c_void;
        let l = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: valid fd, pointer to an int of the given length.
        unsafe {
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, p, l) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, l);
            }
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 64]);

fn sockaddr_in(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

/// One `IP_PKTINFO` socket for many devices.
pub struct Pktinfo {
    sock: UdpSocket,
    gw: Box<libc::sockaddr_in>,
    shdr: Vec<libc::mmsghdr>,
    siov: Vec<libc::iovec>,
    scm: Vec<Cmsg>,
    rhdr: Vec<libc::mmsghdr>,
    riov: Vec<libc::iovec>,
    rcm: Vec<Cmsg>,
    rname: Vec<libc::sockaddr_in>,
    /// Datagrams addressed to no device of ours.
    pub stray: u64,
}

impl Pktinfo {
    pub fn new(gateway: SocketAddr, port: u16, sock_buf: i32) -> io::Result<Self> {
        let SocketAddr::V4(gw) = gateway else {
            return Err(io::Error::other(
                "IP_PKTINFO transport needs an IPv4 gateway",
            ));
        };
        let sock = UdpSocket::bind(("0.0.0.0", port))?;
        sock.set_nonblocking(true)?;
        let fd = sock.as_raw_fd();
        let one: i32 = 1;
        // SAFETY: valid fd and int option.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                &one as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        set_buffers(fd, sock_buf);
        // SAFETY: zeroed mmsghdr/iovec/sockaddr_in are valid plain-old-data.
        let z = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let ziov = || libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(Pktinfo {
            sock,
            gw: Box::new(sockaddr_in(gw)),
            shdr: (0..BATCH).map(|_| z()).collect(),
            siov: (0..BATCH).map(|_| ziov()).collect(),
            scm: vec![Cmsg([0; 64]); BATCH],
            rhdr: (0..BATCH).map(|_| z()).collect(),
            riov: (0..BATCH).map(|_| ziov()).collect(),
            rcm: vec![Cmsg([0; 64]); BATCH],
            rname: (0..BATCH)
                .map(|_| unsafe { std::mem::zeroed::<libc::sockaddr_in>() })
                .collect(),
            stray: 0,
        })
    }

    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Sends `buf` from `src` to `dst` (used by the probe).
    fn send_one(
        &mut self,
        src: Ipv4Addr,
        dst: std::net::SocketAddrV4,
        buf: &[u8],
    ) -> io::Result<()> {
        let saved = *self.gw;
        *self.gw = sockaddr_in(dst);
        let mut tx = TxBatch::new();
        tx.push(0).extend_from_slice(buf);
        let r = self.send_from(&mut tx, |_| src);
        *self.gw = saved;
        if r.errors > 0 {
            return Err(io::Error::other("sendmmsg failed"));
        }
        Ok(())
    }

    fn send_from(&mut self, tx: &mut TxBatch, ip_of: impl Fn(u32) -> Ipv4Addr) -> SendOutcome {
        let mut out = SendOutcome::default();
        let items = tx.items();
        let cmsg_space =
            unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) };
        let cmsg_len = unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) };
        let mut i = 0;
        let mut spins = 0;
        while i < items.len() {
            let k = (items.len() - i).min(BATCH);
            for j in 0..k {
                let (dev, buf) = &items[i + j];
                self.siov[j] = libc::iovec {
                    iov_base: buf.as_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                let cm = self.scm[j].0.as_mut_ptr() as *mut libc::cmsghdr;
                // SAFETY: the 64-byte aligned buffer holds one cmsghdr + in_pktinfo.
                unsafe {
                    (*cm).cmsg_len = cmsg_len as _;
                    (*cm).cmsg_level = libc::IPPROTO_IP;
                    (*cm).cmsg_type = libc::IP_PKTINFO;
                    let p = libc::CMSG_DATA(cm) as *mut libc::in_pktinfo;
                    std::ptr::write_unaligned(
                        p,
                        libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from(ip_of(*dev)).to_be(),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        },
                    );
                }
                let h = &mut self.shdr[j].msg_hdr;
                h.msg_name = &mut *self.gw as *mut libc::sockaddr_in as *mut libc::c_void;
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &mut self.siov[j];
                h.msg_iovlen = 1;
                h.msg_control = self.scm[j].0.as_mut_ptr() as *mut libc::c_void;
                h.msg_controllen = cmsg_space as _;
                h.msg_flags = 0;
            }
            // SAFETY: k initialised headers pointing at live buffers.
            let r = unsafe { libc::sendmmsg(self.fd(), self.shdr.as_mut_ptr(), k as u32, 0) };
            if r > 0 {
                i += r as usize;
                spins = 0;
                continue;
            }
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN if spins < 100 => {
                    out.eagain += 1;
                    spins += 1;
                    let mut p = libc::pollfd {
                        fd: self.fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 10) };
                }
                _ => {
                    // Drop the first datagram of the batch and go on.
                    out.errors += 1;
                    i += 1;
                }
            }
        }
        tx.clear();
        out
    }

    /// Checks that the kernel sends from, and reports the destination of, arbitrary 127/8
    /// addresses: a datagram from the last device's address to ourselves must arrive with that
    /// source and with our pktinfo destination.
    pub fn probe(&mut self, last_device: u32) -> io::Result<()> {
        let port = self.local_port();
        let src = device_ip(last_device);
        let dst = std::net::SocketAddrV4::new(device_ip(0), port);
        self.send_one(src, dst, b"probe")?;
        let mut rx = RxBatch::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            self.wait(Duration::from_millis(10));
            if self.recv(&mut rx) > 0 {
                let (dev, data) = rx.get(0);
                let from = self.rname[0];
                let from_ip = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
                if dev == 0 && data == b"probe" && from_ip == src {
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "probe came back as device {dev} from {from_ip}, expected device 0 from {src}"
                )));
            }
        }
        Err(io::Error::other("probe datagram not received"))
    }
}

impl Transport for Pktinfo {
    fn recv(&mut self, rx: &mut RxBatch) -> usize {
        rx.meta.clear();
        for j in 0..BATCH {
            self.riov[j] = libc::iovec {
                iov_base: rx.bufs[j].as_mut_ptr() as *mut libc::c_void,
                iov_len: RX_BUF,
            };
            let h = &mut self.rhdr[j].msg_hdr;
            h.msg_name = &mut self.rname[j] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut self.riov[j];
            h.msg_iovlen = 1;
            h.msg_control = self.rcm[j].0.as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = 64;
            h.msg_flags = 0;
        }
        // SAFETY: BATCH initialised headers pointing at live buffers.
        let r = unsafe {
            libc::recvmmsg(
                self.fd(),
                self.rhdr.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            return 0;
        }
        let mut kept = 0;
        for j in 0..r as usize {
            let len = self.rhdr[j].msg_len as usize;
            let mut dst = None;
            // SAFETY: the kernel filled msg_control/msg_controllen of this header.
            unsafe {
                let h = &self.rhdr[j].msg_hdr;
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                        let p =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                        dst = Some(u32::from_be(p.ipi_addr.s_addr));
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            match dst.and_then(device_of_ip) {
                Some(dev) => {
                    if kept != j {
                        let (a, b) = rx.bufs.split_at_mut(j);
                        a[kept][..len].copy_from_slice(&b[0][..len]);
                        self.rname[kept] = self.rname[j];
                    }
                    rx.meta.push((dev, len));
                    kept += 1;
                }
                None => self.stray += 1,
            }
        }
        // A full batch means more may be waiting even if every datagram was stray.
        if kept == 0 && r as usize == BATCH {
            return self.recv(rx);
        }
        kept
    }

    fn send(&mut self, tx: &mut TxBatch) -> SendOutcome {
        self.send_from(tx, device_ip)
    }

    fn wait(&mut self, timeout: Duration) {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(1000) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
}

/// One socket per device (fallback).
pub struct Sockets {
    poll: mio::Poll,
    events: mio::Events,
    socks: Vec<mio::net::UdpSocket>,
    ready: Vec<usize>,
    gw: SocketAddr,
    threads: u32,
    thread: u32,
}

impl Sockets {
    /// Sockets for devices `thread, thread + threads, ...` below `n`.
    pub fn new(
        gateway: SocketAddr,
        n: u32,
        threads: u32,
        thread: u32,
        sock_buf: i32,
    ) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let bind: SocketAddr = match (gateway.ip().is_loopback(), gateway.is_ipv6()) {
            (true, false) => "127.0.0.1:0".parse().unwrap(),
            (true, true) => "[::1]:0".parse().unwrap(),
            (false, false) => "0.0.0.0:0".parse().unwrap(),
            (false, true) => "[::]:0".parse().unwrap(),
        };
        let mut socks = Vec::new();
        let mut i = thread;
        while i < n {
            let mut s = mio::net::UdpSocket::bind(bind)?;
            set_buffers(s.as_raw_fd(), sock_buf.min(256 * 1024));
            poll.registry()
                .register(&mut s, mio::Token(socks.len()), mio::Interest::READABLE)?;
            socks.push(s);
            i += threads;
        }
        Ok(Sockets {
            poll,
            events: mio::Events::with_capacity(1024),
            ready: (0..socks.len()).collect(),
            socks,
            gw: gateway,
            threads,
            thread,
        })
    }
}

impl Transport for Sockets {
    fn recv(&mut self, rx: &mut RxBatch) -> usize {
        rx.meta.clear();
        while rx.meta.len() < BATCH {
            let Some(&l) = self.ready.last() else { break };
            let n = rx.meta.len();
            match self.socks[l].recv_from(&mut rx.bufs[n]) {
                Ok((len, _)) => rx.meta.push((l as u32 * self.threads + self.thread, len)),
                Err(_) => {
                    self.ready.pop();
                }
            }
        }
        rx.meta.len()
    }

    fn send(&mut self, tx: &mut TxBatch) -> SendOutcome {
        let mut out = SendOutcome::default();
        for (dev, buf) in tx.items() {
            let l = (dev / self.threads) as usize;
            match self.socks.get(l).map(|s| s.send_to(buf, self.gw)) {
                Some(Ok(_)) => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => out.eagain += 1,
                _ => out.errors += 1,
            }
        }
        tx.clear();
        out
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.ready.is_empty() {
            return;
        }
        if self.poll.poll(&mut self.events, Some(timeout)).is_ok() {
            for ev in self.events.iter() {
                self.ready.push(ev.token().0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_addresses_round_trip() {
        for i in [
            0u32,
            1,
            255,
            256,
            65535,
            65536,
            999_999,
            (MAX_PKTINFO_DEVICES - 1) as u32,
        ] {
            let ip = device_ip(i);
            assert_eq!(ip.octets()[0], 127);
            assert_ne!(ip.octets()[1], 0);
            assert_ne!(ip.octets()[1], 255);
            assert_eq!(device_of_ip(u32::from(ip)), Some(i), "{i} -> {ip}");
        }
        assert_eq!(device_of_ip(u32::from(Ipv4Addr::new(127, 0, 0, 1))), None);
    }

    #[test]
    fn pktinfo_probe_works_on_loopback() {
        let mut p = Pktinfo::new("127.0.0.1:5683".parse().unwrap(), 0, 1 << 20).unwrap();
        p.probe(999_999).unwrap();
    }
}
