//! The operations surface's handle on the running gateway (issue 13): what the HTTP API asks
//! of the workers, and what the workers hand back to it.
//!
//! - [`Ops`] asks: device lists and devices ([`Query`] messages to the workers, answered on a
//!   channel, merged here), kicks, and commands sent on an HTTP caller's behalf
//!   ([`Origin::Api`]) whose answer it waits for.
//! - [`Tap`] is what the workers hold: [`Waiters`] (a command's final answer goes to the caller
//!   waiting for it, as well as to MQTT) and the [`EventBus`] (every publish, for the live event
//!   streams). When no stream is open the bus costs a worker one atomic load per round.
//!
//! Nothing here blocks a worker: answers go over bounded channels with `try_send`; a full
//! event stream loses events (counted per stream), never the worker's time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::core::command::Origin;
use crate::core::router;
use crate::core::shard::{Census, DeviceFilter, DeviceInfo, Publish};

use super::channel::{Query, QueryAnswer, WorkerMsg, WorkerTx};
use super::mqtt::MqttClient;
use crate::security::{management, SharedCredentials};

/// HTTP callers waiting for their command's answer, by the id in [`Origin::Api`].
#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<u64, Sender<Vec<u8>>>>,
}

impl Waiters {
    fn wait_for(&self, id: u64) -> Receiver<Vec<u8>> {
        let (tx, rx) = bounded(1);
        self.waiting.lock().insert(id, tx);
        rx
    }

    fn forget(&self, id: u64) {
        self.waiting.lock().remove(&id);
    }

    /// Hands a final answer to its caller, if it still waits.
    fn deliver(&self, id: u64, payload: &[u8]) {
        if let Some(tx) = self.waiting.lock().remove(&id) {
            let _ = tx.try_send(payload.to_vec());
        }
    }
}

/// One message the gateway published, as the event streams see it.
#[derive(Debug)]
pub struct Event {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A live event stream's end: what the bus offers it, and how many it lost for want of room.
pub struct Subscription {
    pub rx: Receiver<Arc<Event>>,
    pub lost: Arc<AtomicU64>,
    id: u64,
    bus: Arc<EventBus>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.unsubscribe(self.id);
    }
}

struct Subscriber {
    id: u64,
    tx: Sender<Arc<Event>>,
    lost: Arc<AtomicU64>,
}

/// Every publish of the workers, offered to the open event streams.
#[derive(Default)]
pub struct EventBus {
    open: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

impl EventBus {
    /// A new stream holding up to `room` events its reader has not taken yet.
    pub fn subscribe(self: &Arc<Self>, room: usize) -> Subscription {
        let (tx, rx) = bounded(room.max(1));
        let lost = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subs = self.subscribers.lock();
        subs.push(Subscriber {
            id,
            tx,
            lost: lost.clone(),
        });
        self.open.store(subs.len(), Ordering::Relaxed);
        Subscription {
            rx,
            lost,
            id,
            bus: self.clone(),
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| s.id != id);
        self.open.store(subs.len(), Ordering::Relaxed);
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn offer(&self, p: &Publish) {
        let ev = Arc::new(Event {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
        });
        for s in self.subscribers.lock().iter() {
            if let Err(TrySendError::Full(_)) = s.tx.try_send(ev.clone()) {
                s.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a worker hands the operations surface: answers for waiting callers, events for streams.
#[derive(Default)]
pub struct Tap {
    pub waiters: Waiters,
    pub events: Arc<EventBus>,
}

impl Tap {
    /// Called by a worker for each message it publishes.
    pub(super) fn on_publish(&self, p: &Publish) {
        if let Some(id) = p.reply_to {
            self.waiters.deliver(id, &p.payload);
        }
        if self.events.streams() > 0 {
            self.events.offer(p);
        }
    }
}

/// Why the operations surface got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsError {
    /// A worker's queue is full: try again.
    Busy,
    /// No answer within the time given.
    Timeout,
    /// The gateway is stopping.
    Stopping,
}

/// A page of the device list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
    /// Devices the filter accepts, all workers together.
    pub count: usize,
    pub has_next: bool,
}

/// The handle the HTTP API works through.
pub struct Ops {
    workers: Vec<WorkerTx>,
    tap: Arc<Tap>,
    next_id: AtomicU64,
    mqtt: MqttClient,
    credentials: SharedCredentials,
}

/// Devices asked of each worker at most for one page (page × limit): deeper pages take `after`.
pub const MAX_WINDOW: usize = 100_000;

impl Ops {
    pub(super) fn new(
        workers: Vec<WorkerTx>,
        tap: Arc<Tap>,
        mqtt: MqttClient,
        credentials: SharedCredentials,
    ) -> Ops {
        Ops {
            workers,
            tap,
            next_id: AtomicU64::new(1),
            mqtt,
            credentials,
        }
    }

    /// Messages waiting for the MQTT thread.
    pub fn mqtt_queued(&self) -> usize {
        self.mqtt.queued()
    }

    /// A credential management request (the JSON of the MQTT `credential-…` commands, see
    /// `security::management`): answered, saved, and applied by every worker.
    pub fn manage_credentials(&self, payload: &[u8]) -> management::Answer {
        manage_credentials(&self.credentials, &self.workers, payload)
    }

    pub fn events(&self) -> &Arc<EventBus> {
        &self.tap.events
    }

    /// Asks every worker (`to` = all) or one, and collects the answers until `deadline`.
    fn ask(
        &self,
        to: Option<usize>,
        query: impl Fn() -> Query,
        timeout: Duration,
    ) -> Result<Vec<QueryAnswer>, OpsError> {
        let targets: Vec<usize> = match to {
            Some(w) => vec![w],
            None => (0..self.workers.len()).collect(),
        };
        let (tx, rx) = bounded(targets.len());
        for &w in &targets {
            let msg = WorkerMsg::Query {
                query: query(),
                reply: tx.clone(),
            };
            match self.workers[w].try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(OpsError::Busy),
                Err(TrySendError::Disconnected(_)) => return Err(OpsError::Stopping),
            }
        }
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::with_capacity(targets.len());
        while answers.len() < targets.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            answers.push(rx.recv_timeout(left).map_err(|_| OpsError::Timeout)?);
        }
        Ok(answers)
    }

    fn owner(&self, endpoint: &str) -> usize {
        router::shard_of_endpoint(endpoint.as_bytes(), self.workers.len())
    }

    /// Page `page` (from 1) of `limit` devices the filter accepts, in endpoint order, those
    /// after `after` only when it is given (then `page` should be 1).
    pub fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        page: usize,
        limit: usize,
        timeout: Duration,
    ) -> Result<DeviceList, OpsError> {
        let skip = page.saturating_sub(1).saturating_mul(limit);
        // One more than the page, to tell whether a next one exists.
        let window = skip.saturating_add(limit).saturating_add(1).min(MAX_WINDOW);
        let answers = self.ask(
            None,
            || Query::Devices {
                filter: filter.clone(),
                after: after.map(str::to_string),
                limit: window,
            },
            timeout,
        )?;
        let mut all = Vec::new();
        let mut count = 0;
        for a in answers {
            if let QueryAnswer::Devices(p) = a {
                count += p.matching;
                all.extend(p.devices);
            }
        }
        all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        let has_next = all.len() > skip + limit;
        let devices = all.into_iter().skip(skip).take(limit).collect();
        Ok(DeviceList {
            devices,
            count,
            has_next,
        })
    }

    /// The device registered as `endpoint`, with its observations.
    pub fn device(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Option<DeviceInfo>, OpsError> {
        let w = self.owner(endpoint);
        let a = self.ask(Some(w), || Query::Device(endpoint.to_string()), timeout)?;
        Ok(match a.into_iter().next() {
            Some(QueryAnswer::Device(d)) => d.map(|d| *d),
            _ => None,
        })
    }

    /// Forgets `endpoint`'s registration; false if it had none.
    pub fn kick(&self, endpoint: &str, timeout: Duration) -> Result<bool, OpsError> {
        let w = self.owner(endpoint);
        let a = self.ask(Some(w), || Query::Kick(endpoint.to_string()), timeout)?;
        Ok(matches!(a.first(), Some(QueryAnswer::Kicked(true))))
    }

    /// Sends the MQTT command JSON `payload` to `endpoint` and waits for its final answer (the
    /// JSON the gateway publishes on the response topic, which it publishes there too).
    pub fn command(
        &self,
        endpoint: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, OpsError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let answer = self.tap.waiters.wait_for(id);
        let msg = WorkerMsg::Command {
            endpoint: endpoint.to_string(),
            payload,
            // The command outlives the wait like an MQTT one: a late answer is published.
            expiry: None,
            origin: Origin::Api(id),
        };
        let sent = self.workers[self.owner(endpoint)].try_send(msg);
        let result = match sent {
            Ok(()) => answer.recv_timeout(timeout).map_err(|_| OpsError::Timeout),
            Err(TrySendError::Full(_)) => Err(OpsError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(OpsError::Stopping),
        };
        if result.is_err() {
            self.tap.waiters.forget(id);
        }
        result
    }

    /// Registrations by kind, all workers together.
    pub fn census(&self, timeout: Duration) -> Result<Census, OpsError> {
        let mut all: std::collections::BTreeMap<(&'static str, String, bool), u64> =
            Default::default();
        for a in self.ask(None, || Query::Census, timeout)? {
            if let QueryAnswer::Census(c) = a {
                for (k, n) in c.by_kind {
                    *all.entry(k).or_default() += n;
                }
            }
        }
        Ok(Census {
            by_kind: all.into_iter().collect(),
        })
    }

    /// Messages waiting in each worker's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.workers.iter().map(WorkerTx::len).collect()
    }
}

/// A credential management request, from MQTT or HTTP: the answer; a change is saved to the
/// credentials file (if there is one) and, when it removed or replaced a credential, applied by
/// every worker (sessions of that credential end).
pub(super) fn manage_credentials(
    store: &SharedCredentials,
    workers: &[WorkerTx],
    payload: &[u8],
) -> management::Answer {
    let answer = management::handle(store, payload);
    if answer.changed {
        if let Err(e) = store.persist() {
            log::error!("cannot save the credentials file: {e}");
        }
        // Only a removed or replaced credential can end sessions; a provisioning burst of
        // additions must not make every worker sweep its sessions each time.
        let code = serde_json::from_slice::<serde_json::Value>(&answer.payload)
            .ok()
            .and_then(|v| v["data"]["code"].as_str().map(str::to_string));
        if matches!(code.as_deref(), Some("2.02" | "2.04")) {
            for w in workers {
                let _ = w.try_send(WorkerMsg::CredentialsChanged);
            }
        }
    }
    answer
}
