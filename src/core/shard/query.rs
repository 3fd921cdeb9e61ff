//! What the operations surface (issue 13: HTTP API, web page) asks a shard: its devices, one
//! device with its observations, and to forget one (kick). Typed answers, sans-IO; the HTTP
//! layer turns them into JSON. Nothing here runs on the datagram path: a query costs its
//! worker the time to walk its sessions (a list) or one lookup (a device).

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use crate::core::ids::RegId;
use crate::lwm2m::Path;

use super::session::Session;
use super::{Output, Shard};

/// Which devices a list wants. Every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// The endpoint starts with this.
    pub endpoint_prefix: Option<String>,
    /// The endpoint contains this (EMQX's `like_endpoint_name`).
    pub endpoint_contains: Option<String>,
    /// Reachable now: false only for a queue-mode device outside its wake window.
    pub online: Option<bool>,
    pub queue_mode: Option<bool>,
}

/// One registered device, as the operations surface shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub endpoint: String,
    pub registration_id: String,
    pub lifetime: u32,
    /// The negotiated LwM2M version (`"1.0"`, `"1.1"`, `"1.2"`).
    pub version: &'static str,
    /// `b=` as the device sent it, `"U"` when it sent none.
    pub binding: String,
    pub queue_mode: bool,
    pub online: bool,
    pub address: SocketAddr,
    /// `nosec`, `psk`, `rpk`, `x509`.
    pub security: String,
    /// Milliseconds since 1970.
    pub last_seen_ms: u64,
    pub expires_at_ms: u64,
    /// The object links of the registration (`/3/0`, ...).
    pub object_list: Vec<String>,
    /// With [`Shard::device`] only: the paths observed and the commands waiting.
    pub observations: Vec<String>,
    pub queued_commands: usize,
}

impl DeviceFilter {
    fn accepts(&self, s: &Session, online: bool) -> bool {
        let ep = &*s.reg.endpoint;
        self.endpoint_prefix
            .as_deref()
            .map_or(true, |p| ep.starts_with(p))
            && self
                .endpoint_contains
                .as_deref()
                .map_or(true, |p| ep.contains(p))
            && self.online.map_or(true, |o| o == online)
            && self.queue_mode.map_or(true, |q| q == s.reg.queue_mode)
    }
}

/// The registrations of a shard counted by kind, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// (LwM2M version, binding, queue mode) -> registrations. The binding is the letters of
    /// `b=` the specification defines, in its order (`U`, `UQ`, `SQ`, ...), so that no device
    /// can make up a series of its own.
    pub by_kind: Vec<((&'static str, String, bool), u64)>,
}

/// The binding letters of LwM2M 1.0–1.2, in the order labels list them.
const BINDING_LETTERS: &str = "USNTMHQ";
const VERSIONS: [&str; 4] = ["1.0", "1.1", "1.2", "other"];

/// `b=` as a set of [`BINDING_LETTERS`] (bit i = letter i).
fn binding_mask(b: &str) -> usize {
    BINDING_LETTERS
        .chars()
        .enumerate()
        .filter(|(_, c)| b.contains(*c))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// The letters of `mask` in [`BINDING_LETTERS`] order; `U` when none is left but `Q`.
fn mask_label(mask: usize) -> String {
    let label: String = BINDING_LETTERS
        .chars()
        .enumerate()
        .filter(|(i, _)| mask & 1 << i != 0)
        .map(|(_, c)| c)
        .collect();
    if label.is_empty() || label == "Q" {
        format!("U{label}")
    } else {
        label
    }
}

/// Registrations by kind, kept in step by `Sessions` as sessions come, go and change binding,
/// so that the metrics' census is a read of 512 counters, not a walk of the sessions.
#[derive(Debug, Default)]
pub(super) struct Kinds {
    /// [version index × 128 + binding mask]; empty until the first registration.
    counts: Vec<u32>,
}

impl Kinds {
    /// The kind of a registration. Queue mode is the registration's own flag (LwM2M 1.1 sets
    /// it with the `Q` parameter, apart from `b=`), shown as the binding's `Q`.
    pub fn of(reg: &crate::core::registration::Registration) -> usize {
        let v = VERSIONS[..3]
            .iter()
            .position(|v| *v == reg.version())
            .unwrap_or(3);
        let q = 1 << (BINDING_LETTERS.len() - 1);
        let mask = binding_mask(reg.binding()) & !q | if reg.queue_mode { q } else { 0 };
        v * 128 + mask
    }

    pub fn add(&mut self, kind: usize) {
        if self.counts.is_empty() {
            self.counts = vec![0; VERSIONS.len() * 128];
        }
        if let Some(c) = self.counts.get_mut(kind) {
            *c += 1;
        }
    }

    pub fn sub(&mut self, kind: usize) {
        if let Some(c) = self.counts.get_mut(kind) {
            *c = c.saturating_sub(1);
        }
    }

    fn census(&self) -> Census {
        let q = 1 << BINDING_LETTERS.len().saturating_sub(1);
        let mut by_kind: std::collections::BTreeMap<(&'static str, String, bool), u64> =
            Default::default();
        for (kind, n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (v, mask) = (VERSIONS[kind / 128], kind % 128);
            *by_kind
                .entry((v, mask_label(mask), mask & q != 0))
                .or_default() += u64::from(*n);
        }
        Census {
            by_kind: by_kind.into_iter().collect(),
        }
    }
}

/// A page of devices, in endpoint order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePage {
    pub devices: Vec<DeviceInfo>,
    /// Devices the filter accepts (all of them, not only this page's).
    pub matching: usize,
}

impl Shard {
    /// The first `limit` devices (by endpoint) the filter accepts whose endpoint comes after
    /// `after`, and how many it accepts in all.
    pub fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: usize,
        now: Instant,
        wall: SystemTime,
    ) -> DevicePage {
        // The `limit` smallest endpoints, in a max-heap: O(n log limit), bounded memory.
        let mut best: BinaryHeap<(&str, RegId)> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        let mut matching = 0;
        for (reg, s) in self.sessions.iter() {
            if !filter.accepts(s, self.online(s, now)) {
                continue;
            }
            matching += 1;
            let ep = &*s.reg.endpoint;
            if after.is_some_and(|a| ep <= a) || limit == 0 {
                continue;
            }
            if best.len() < limit {
                best.push((ep, reg));
            } else if best.peek().is_some_and(|(top, _)| ep < *top) {
                best.pop();
                best.push((ep, reg));
            }
        }
        let devices = best
            .into_sorted_vec()
            .into_iter()
            .filter_map(|(_, reg)| Some(self.info(reg, self.sessions.get(reg)?, false, now, wall)))
            .collect();
        DevicePage { devices, matching }
    }

    /// Every registration counted by kind (kept as registrations come and go: no walk).
    pub fn census(&self) -> Census {
        self.sessions.kinds().census()
    }

    /// The device registered as `endpoint`, with its observations and waiting commands.
    pub fn device(&self, endpoint: &str, now: Instant, wall: SystemTime) -> Option<DeviceInfo> {
        let reg = self.sessions.find_endpoint(endpoint)?;
        Some(self.info(reg, self.sessions.get(reg)?, true, now, wall))
    }

    /// Forgets the registration of `endpoint` as if it had deregistered (`deregister` event with
    /// reason `kicked`; its waiting commands are answered 4.04). False if there is none.
    pub fn kick(&mut self, now: Instant, endpoint: &str, out: &mut Output) -> bool {
        self.start_clock(now);
        match self.sessions.find_endpoint(endpoint) {
            Some(reg) => {
                self.remove_session(reg, "kicked", out);
                true
            }
            None => false,
        }
    }

    fn online(&self, s: &Session, now: Instant) -> bool {
        s.reachable(self.stamp(now), self.cfg.qmode_time_window)
    }

    fn info(
        &self,
        reg: RegId,
        s: &Session,
        detail: bool,
        now: Instant,
        wall: SystemTime,
    ) -> DeviceInfo {
        let at = |stamp: u64| {
            let t = self
                .epoch
                .map_or(now, |e| e + std::time::Duration::from_nanos(stamp));
            super::durable::wall_ms(t, now, wall)
        };
        let work = s.work.as_deref().filter(|_| detail);
        let observations = work.map_or_else(Vec::new, |w| {
            let mut paths: Vec<String> = w
                .observations
                .values()
                .map(|o| observed_path(&o.request.path, &o.request.paths))
                .collect();
            paths.sort();
            paths
        });
        DeviceInfo {
            endpoint: s.reg.endpoint.to_string(),
            registration_id: reg.to_string(),
            lifetime: s.reg.lifetime,
            version: s.reg.version(),
            binding: s.reg.binding().to_string(),
            queue_mode: s.reg.queue_mode,
            online: self.online(s, now),
            address: s.peer.addr,
            security: s.reg.security.to_string(),
            last_seen_ms: at(s.last_uplink),
            expires_at_ms: at(s.expires_at),
            object_list: s
                .reg
                .objects
                .as_ref()
                .map(|o| o.object_list().map(str::to_string).collect())
                .unwrap_or_default(),
            observations,
            queued_commands: work.map_or(0, |w| w.queue.len() + usize::from(w.inflight.is_some())),
        }
    }
}

/// A composite observation shows its paths joined by commas.
fn observed_path(path: &Path, paths: &[Path]) -> String {
    if paths.is_empty() {
        path.to_string()
    } else {
        paths
            .iter()
            .map(Path::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::{binding_mask, mask_label};

    #[test]
    fn binding_labels_are_bounded_and_canonical() {
        let label = |b: &str| mask_label(binding_mask(b));
        assert_eq!(label("U"), "U");
        assert_eq!(label("UQ"), "UQ");
        assert_eq!(label("QU"), "UQ");
        assert_eq!(label("UQS"), "USQ");
        assert_eq!(label(""), "U");
        assert_eq!(label("Q"), "UQ");
        assert_eq!(label("<script>"), "U");
        assert_eq!(label("TTT"), "T");
    }
}
