//! One registered device's state in its shard: the registration, where the device is, when it
//! expires, and what the gateway has going on with it ([`Work`]: the exchange in flight, the
//! downlink queue, the observations).
//!
//! Laid out for a million idle devices: a session without work carries 8 bytes for it, instants
//! are 8-byte [`Stamp`]s. The durable part (what a restart must keep: registration, peer, expiry,
//! observations) is what [`Session`] and [`Observation`] hold apart from the transient exchange
//! state, so it can be written out from one place.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::coap::block::{Block1Sender, Block2Assembly, BlockOpt};
use crate::core::command::{CommandHead, Op};
use crate::core::ids::Token;
use crate::core::intmap::IntMap;
use crate::core::peer::Peer;
use crate::core::registration::Registration;
use crate::core::request::Request;

/// Instants a session keeps are nanoseconds since the shard's epoch: 8 bytes instead of 16, and
/// exact.
pub(super) type Stamp = u64;

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub(super) struct Session {
    pub reg: Registration,
    pub peer: Peer,
    pub expires_at: Stamp,
    /// Last datagram from the device: a queue-mode device is reachable for a while after it.
    pub last_uplink: Stamp,
    pub work: Option<Box<Work>>,
}

impl Session {
    pub fn reachable(&self, now: Stamp, window: Duration) -> bool {
        !self.reg.queue_mode || now < self.last_uplink.saturating_add(nanos(window))
    }

    pub fn work_mut(&mut self) -> &mut Work {
        self.work.get_or_insert_with(Box::default)
    }

    pub fn inflight(&self) -> Option<&Exchange> {
        self.work.as_ref()?.inflight.as_deref()
    }

    pub fn inflight_mut(&mut self) -> Option<&mut Exchange> {
        self.work.as_mut()?.inflight.as_deref_mut()
    }

    pub fn observation(&self, token: Token) -> Option<&Observation> {
        self.work.as_ref()?.observations.get(&token).map(|o| &**o)
    }

    pub fn queue_len(&self) -> usize {
        self.work.as_ref().map_or(0, |w| w.queue.len())
    }

    /// Releases the `Work` once nothing is in flight, queued or observed.
    pub fn settle(&mut self) {
        if self.work.as_ref().is_some_and(|w| w.is_idle()) {
            self.work = None;
        }
    }

    pub fn versions(&self) -> &[(u16, Box<str>)] {
        self.reg.objects.as_ref().map_or(&[][..], |o| o.versions())
    }

    /// The device address for `${peerhost}` topics, formatted only when a topic needs it.
    pub fn host(&self) -> Option<IpAddr> {
        Some(self.peer.addr.ip())
    }
}

/// What a session has going on with its device. Allocated when the first command or observation
/// arrives and dropped when all of it is over again ([`Session::settle`]).
#[derive(Debug, Default)]
pub(super) struct Work {
    /// Boxed: an observed device usually has nothing in flight.
    pub inflight: Option<Box<Exchange>>,
    pub queue: VecDeque<Queued>,
    /// Boxed: the map keeps spare slots; inline, two observations would cost a 4-slot table of
    /// full observations per device.
    pub observations: IntMap<Token, Box<Observation>>,
}

impl Work {
    pub fn is_idle(&self) -> bool {
        self.inflight.is_none() && self.queue.is_empty() && self.observations.is_empty()
    }
}

/// A command waiting for its turn (NSTART = 1) or for a sleeping device to wake up.
#[derive(Debug)]
pub(super) struct Queued {
    pub op: Op,
    pub cmd: CommandHead,
    pub request: Request,
    pub expires_at: Option<Instant>,
    pub purpose: Purpose,
}

/// Why an exchange runs: for a command (its answer is the command's response), or to fetch the
/// rest of a notification that came with Block2 (RFC 7959 §3.4 with RFC 7641): the gateway asks
/// for the remaining blocks with plain requests and publishes the whole as one notification.
#[derive(Debug)]
pub(super) enum Purpose {
    Command,
    NotificationRest {
        assembly: Block2Assembly,
        next: BlockOpt,
        seq_num: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExchangeState {
    AwaitAck,
    /// An empty ACK came; the answer will be a separate response.
    AwaitSeparate,
}

/// How an exchange's bodies travel (RFC 7959).
#[derive(Debug)]
pub(super) enum Transfer {
    /// One datagram each way.
    Single,
    /// The request body, block by block (Block1).
    Block1(Block1Sender),
    /// The answer, block by block (Block2): what arrived, the block to ask for next, and the
    /// Observe value of the first block (an observe's answer keeps it for its seqNum).
    Block2 {
        assembly: Block2Assembly,
        next: BlockOpt,
        observe: Option<u32>,
    },
}

/// The confirmable request in flight to one device (NSTART = 1).
#[derive(Debug)]
pub(super) struct Exchange {
    pub op: Op,
    pub cmd: CommandHead,
    pub request: Request,
    pub token: Token,
    pub mid: u16,
    /// The datagram as last sent, for retransmission.
    pub bytes: Vec<u8>,
    pub retransmits: u32,
    pub timeout: Duration,
    pub deadline: Instant,
    /// First transmission: the command's round trip is measured from here.
    pub started: Instant,
    pub state: ExchangeState,
    pub transfer: Transfer,
    pub outcome: Outcome,
}

/// What the device's final answer to an exchange is published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The command's response.
    Response,
    /// The notification (with this Observe value) whose remaining blocks the exchange fetched.
    Notification { seq_num: Option<u32> },
}

impl Exchange {
    /// The request as it must be sent again from the start (after a re-registration).
    pub fn into_queued(self) -> Queued {
        let mut request = self.request;
        if let Transfer::Block1(b1) = self.transfer {
            request.payload = b1.into_body();
        }
        Queued {
            op: self.op,
            cmd: self.cmd,
            request,
            expires_at: None,
            purpose: Purpose::Command,
        }
    }
}

/// An established observation, keyed by its token. Notifications echo `cmd`.
#[derive(Debug)]
pub(super) struct Observation {
    pub op: Op,
    pub cmd: CommandHead,
    pub request: Request,
    pub last_seq: Option<u32>,
    pub last_at: Instant,
}
