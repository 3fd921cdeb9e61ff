//! The queue into a worker: [`WorkerMsg`], and [`WorkerTx`], its sending side (a bounded
//! crossbeam channel plus the [`Doorbell`] that wakes the worker when it sleeps).
//!
//! Producers are the event loop (datagrams) and the MQTT thread (commands); the consumer is one
//! worker thread. Back-pressure: the queue is bounded and [`WorkerTx::try_send`] never blocks; a
//! full queue is the producer's to handle (the event loop drops and counts, the MQTT thread
//! answers `5.03`). Only shutdown's [`WorkerTx::send`] of [`WorkerMsg::Stop`] waits for room,
//! because a lost `Stop` would leave the worker running.
//!
//! A leaf of the runtime: it uses only the doorbell and the core's `Peer`, never `mqtt` or the
//! gateway handle, so both of those can depend on it without an import cycle.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::core::command::Origin;
use crate::core::shard::{Census, DeviceFilter, DeviceInfo, DevicePage, Peer};
use crate::dtls::server::Session;
use crate::dtls::ConnKey;

use super::doorbell::Doorbell;

pub enum WorkerMsg {
    Datagram {
        peer: Peer,
        bytes: Vec<u8>,
    },
    Command {
        endpoint: String,
        payload: Vec<u8>,
        /// MQTT 5 Message-Expiry-Interval left when the command arrived.
        expiry: Option<Duration>,
        /// MQTT, or an HTTP API caller waiting for the answer.
        origin: Origin,
    },
    /// A question of the operations surface (`ops`), answered on `reply`.
    Query {
        query: Query,
        reply: Sender<QueryAnswer>,
    },
    /// A DTLS session established on another worker, for an endpoint of this one.
    Session {
        key: ConnKey,
        session: Box<Session>,
    },
    /// The credential store changed: sessions of removed credentials end.
    CredentialsChanged,
    Stop,
}

/// What the operations surface asks a worker (see [`crate::core::shard::Shard::devices`]).
pub enum Query {
    Devices {
        filter: DeviceFilter,
        after: Option<String>,
        limit: usize,
    },
    Device(String),
    Kick(String),
    /// Registrations by kind, for the metrics.
    Census,
}

pub enum QueryAnswer {
    Devices(DevicePage),
    Device(Option<Box<DeviceInfo>>),
    Kicked(bool),
    Census(Census),
}

/// The sending side of a worker's queue: a bounded channel plus the doorbell that wakes the
/// worker when it sleeps.
#[derive(Clone)]
pub struct WorkerTx {
    tx: Sender<WorkerMsg>,
    bell: Arc<Doorbell>,
}

/// The receiving side, moved into the worker thread, which must bind the doorbell to itself
/// ([`Doorbell::bind_current`]) before it first sleeps.
pub(super) struct WorkerRx {
    pub(super) rx: Receiver<WorkerMsg>,
    pub(super) bell: Arc<Doorbell>,
}

/// A worker queue holding up to `capacity` messages.
pub(super) fn worker_queue(capacity: usize) -> (WorkerTx, WorkerRx) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let bell = Arc::new(Doorbell::for_thread());
    (
        WorkerTx {
            tx,
            bell: bell.clone(),
        },
        WorkerRx { rx, bell },
    )
}

impl WorkerTx {
    /// Messages waiting in the queue now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    pub fn try_send(&self, m: WorkerMsg) -> Result<(), TrySendError<WorkerMsg>> {
        self.tx.try_send(m)?;
        self.bell.ring();
        Ok(())
    }

    /// Blocks while the queue is full; for shutdown only.
    pub(super) fn send(&self, m: WorkerMsg) {
        if self.tx.send(m).is_ok() {
            self.bell.ring();
        }
    }
}
