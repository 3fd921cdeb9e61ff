//! A DTLS device for the integration tests: a UDP socket driven by the gateway crate's own
//! sans-IO PSK client (`lwm2m_gateway::dtls::client`). Interop with other DTLS stacks is the
//! business of the `interop_dtls` tests; this one lets a test script every refusal.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use lwm2m_gateway::dtls::client::Client;
use lwm2m_gateway::dtls::Suite;

use super::WAIT;

pub struct DtlsDevice {
    pub sock: UdpSocket,
    pub gw: SocketAddr,
    pub client: Client,
}

impl DtlsDevice {
    pub fn new(gw: SocketAddr, identity: &str, key: &[u8]) -> DtlsDevice {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        DtlsDevice {
            sock,
            gw,
            client: Client::new(identity.as_bytes(), key, &[Suite::PskAes128Ccm8], 7),
        }
    }

    fn recv_raw(&self, d: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(d)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// The same, offering a Connection ID (RFC 9146; the gateway's records to it carry none).
    pub fn with_connection_id(gw: SocketAddr, identity: &str, key: &[u8]) -> DtlsDevice {
        let mut d = DtlsDevice::new(gw, identity, key);
        d.client = Client::new(identity.as_bytes(), key, &[Suite::PskAes128Ccm8], 8)
            .with_connection_id(&[]);
        d
    }

    /// The NAT in front of the device rebinds: from now on it sends from another port.
    pub fn rebind(&mut self) {
        self.sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    }

    /// Runs a full handshake (retransmitting every 500 ms); true if it was established, false
    /// if the gateway answered with an alert or went quiet for [`WAIT`].
    pub fn handshake(&mut self) -> bool {
        let hello = self.client.connect();
        self.drive(hello)
    }

    /// An abbreviated handshake for the session established last.
    pub fn resume(&mut self) -> bool {
        let hello = self.client.resume();
        self.drive(hello)
    }

    fn drive(&mut self, first: Vec<u8>) -> bool {
        self.sock.send_to(&first, self.gw).unwrap();
        let deadline = Instant::now() + WAIT;
        while !self.client.is_established() && self.client.failure().is_none() {
            if Instant::now() > deadline {
                return false;
            }
            match self.recv_raw(Duration::from_millis(500)) {
                Some(d) => {
                    if let Some(r) = self.client.on_datagram(&d, &mut |_| {}) {
                        self.sock.send_to(&r, self.gw).unwrap();
                    }
                }
                None => {
                    let again = self.client.last_flight().to_vec();
                    self.sock.send_to(&again, self.gw).unwrap();
                }
            }
        }
        self.client.is_established()
    }

    /// Sends one CoAP message inside the session.
    pub fn send(&mut self, coap: &[u8]) {
        let rec = self.client.seal(coap).expect("established");
        self.sock.send_to(&rec, self.gw).unwrap();
    }

    /// The next CoAP message from the gateway, waiting at most `d`.
    pub fn try_recv(&mut self, d: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let raw = self.recv_raw(left.max(Duration::from_millis(1)))?;
            let mut got = None;
            self.client
                .on_datagram(&raw, &mut |p| got = Some(p.to_vec()));
            if got.is_some() {
                return got;
            }
        }
    }

    pub fn recv(&mut self) -> Vec<u8> {
        self.try_recv(WAIT).expect("a CoAP message over DTLS")
    }

    /// Sends `coap` and returns the answer.
    pub fn request(&mut self, coap: &[u8]) -> Vec<u8> {
        self.send(coap);
        self.recv()
    }
}
