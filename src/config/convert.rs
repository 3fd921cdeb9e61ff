//! [`Options`] ↔ [`Config`]: the only place that knows which option lands in which field and in
//! which unit. [`Options::apply`] writes the given options over a configuration;
//! [`Options::from_config`] is its inverse (the help renders `Config::default()` through it).
//! Both destructure or build every field without `..`, so the compiler rejects an option
//! forgotten in either direction; a round-trip test checks they agree.

use std::time::Duration;

use super::options::{
    BlockwiseOptions, CoapOptions, DtlsOptions, HttpOptions, LimitsOptions, LogOptions,
    MqttOptions, Options, SecurityOptions, StateOptions,
};
use super::translators::{TranslatorOptions, TranslatorsOptions, TRANSLATORS};
use super::values::{HttpListen, Seconds, Secret};
use super::Config;

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// For the fields of [`Config`] that are themselves optional: a given value replaces.
fn set_some<T>(slot: &mut Option<T>, v: Option<T>) {
    if v.is_some() {
        *slot = v;
    }
}

impl Options {
    /// Overwrites the fields of `c` whose option is given. Values were checked when read; what
    /// depends on several options is checked by `Config::validate`.
    pub fn apply(self, c: &mut Config) {
        let Options {
            listen,
            workers,
            expected_devices,
            worker_queue,
            recv_buffer,
            lifetime_min,
            lifetime_max,
            xml_dir,
            mountpoint,
            update_msg_publish_condition,
            write_encoding,
            downlink_queue_max,
            downlink_queue_max_age,
            qmode_time_window,
            auto_observe,
            mut translators,
            blockwise,
            coap,
            mqtt,
            dtls,
            security,
            state,
            limits,
            http,
            log,
        } = self;
        set(&mut c.listen, listen);
        set(&mut c.workers, workers);
        set(&mut c.expected_devices, expected_devices);
        set(&mut c.worker_queue, worker_queue);
        set(&mut c.recv_buffer, recv_buffer);
        set(&mut c.lifetime_min, lifetime_min);
        set(&mut c.lifetime_max, lifetime_max);
        set(&mut c.xml_dir, xml_dir);
        set(&mut c.mountpoint, mountpoint);
        set(
            &mut c.update_msg_publish_condition,
            update_msg_publish_condition,
        );
        set(&mut c.write_encoding, write_encoding);
        set(&mut c.downlink_queue_max, downlink_queue_max);
        if let Some(age) = downlink_queue_max_age {
            c.downlink_queue_max_age = (age > 0).then(|| Duration::from_secs(age));
        }
        set(&mut c.qmode_time_window, qmode_time_window.map(|s| s.0));
        set(&mut c.auto_observe, auto_observe);
        for t in &TRANSLATORS {
            let TranslatorOptions { topic, qos } = std::mem::take((t.options)(&mut translators));
            let slot = (t.config_mut)(&mut c.translators);
            set(&mut slot.topic, topic);
            set(&mut slot.qos, qos);
        }

        let BlockwiseOptions {
            block_size,
            max_body,
            total_max,
        } = blockwise;
        set(&mut c.block_size, block_size);
        set(&mut c.block_max_body, max_body);
        set(&mut c.block_total_max, total_max);

        let CoapOptions {
            ack_timeout,
            ack_random_factor,
            max_retransmit,
            separate_response_timeout,
            dedup_max_entries,
        } = coap;
        set(&mut c.coap.ack_timeout, ack_timeout.map(|s| s.0));
        set(&mut c.coap.ack_random_factor, ack_random_factor);
        set(&mut c.coap.max_retransmit, max_retransmit);
        set(
            &mut c.separate_response_timeout,
            separate_response_timeout.map(|s| s.0),
        );
        set(&mut c.dedup_max_entries, dedup_max_entries);

        let MqttOptions {
            url,
            version,
            broker_listen,
            client_id,
            username,
            password,
            keep_alive,
            inflight,
            channel_capacity,
            max_packet_size,
            reconnect_min,
            reconnect_max,
        } = mqtt;
        let m = &mut c.mqtt;
        set_some(&mut m.url, url);
        set(&mut m.version, version);
        set(&mut m.broker_listen, broker_listen);
        set(&mut m.client_id, client_id);
        set_some(&mut m.username, username);
        set_some(&mut m.password, password.map(|p| p.0));
        set(&mut m.keep_alive, keep_alive.map(Duration::from_secs));
        set(&mut m.inflight, inflight);
        set(&mut m.channel_capacity, channel_capacity);
        set(&mut m.max_packet_size, max_packet_size);
        set(&mut m.reconnect_min, reconnect_min.map(|s| s.0));
        set(&mut m.reconnect_max, reconnect_max.map(|s| s.0));

        let DtlsOptions {
            listen,
            certificate,
            private_key,
            trust_anchors,
            max_handshakes,
            max_sessions,
            handshake_timeout,
            idle_timeout,
            connection_id,
        } = dtls;
        let d = &mut c.dtls;
        set(&mut d.listen, listen);
        set_some(&mut d.certificate, certificate);
        set_some(&mut d.private_key, private_key);
        set(&mut d.trust_anchors, trust_anchors);
        set(&mut d.max_handshakes, max_handshakes);
        set(&mut d.max_sessions, max_sessions);
        set(&mut d.handshake_timeout, handshake_timeout.map(|s| s.0));
        set(&mut d.idle_timeout, idle_timeout.map(|s| s.0));
        set(&mut d.connection_id, connection_id);

        let SecurityOptions {
            credentials,
            plain_requires_credential,
            reload_interval,
        } = security;
        let sec = &mut c.security;
        set_some(&mut sec.credentials, credentials);
        set(
            &mut sec.plain_requires_credential,
            plain_requires_credential,
        );
        set(
            &mut sec.reload_interval,
            reload_interval.map(Duration::from_secs),
        );

        let StateOptions {
            dir,
            snapshot_interval,
            journal_interval,
        } = state;
        // An empty directory name turns the durable state off.
        set(
            &mut c.state.dir,
            dir.map(|d| (!d.as_os_str().is_empty()).then_some(d)),
        );
        set(
            &mut c.state.snapshot_interval,
            snapshot_interval.map(Duration::from_secs),
        );
        set(&mut c.state.journal_interval, journal_interval.map(|s| s.0));

        let LimitsOptions {
            max_registrations,
            register_rate,
            register_burst,
            error_rate,
            error_burst,
            block_time,
            max_sources,
            max_datagram,
        } = limits;
        let l = &mut c.limits;
        set(&mut l.max_registrations, max_registrations);
        set(&mut l.register_rate, register_rate);
        set(&mut l.register_burst, register_burst);
        set(&mut l.error_rate, error_rate);
        set(&mut l.error_burst, error_burst);
        set(&mut l.block_time, block_time.map(Duration::from_secs));
        set(&mut l.max_sources, max_sources);
        set(&mut l.max_datagram, max_datagram);

        let HttpOptions {
            listen,
            token,
            cors_origin,
            threads,
            command_timeout,
            max_event_streams,
        } = http;
        let h = &mut c.http;
        set(&mut h.listen, listen.map(|l| l.0));
        set_some(&mut h.token, token.map(|t| t.0));
        set_some(&mut h.cors_origin, cors_origin);
        set(&mut h.threads, threads);
        set(
            &mut h.command_timeout,
            command_timeout.map(Duration::from_secs),
        );
        set(&mut h.max_event_streams, max_event_streams);

        let LogOptions {
            level,
            stats_interval,
        } = log;
        set(&mut c.log_level, level);
        set(
            &mut c.stats_interval,
            stats_interval.map(Duration::from_secs),
        );
    }

    /// Every option as `c` has it (`None` only where `c` has none: no broker URL, no login).
    pub fn from_config(c: &Config) -> Options {
        let mut translators = TranslatorsOptions::default();
        for t in &TRANSLATORS {
            let tr = (t.config)(&c.translators);
            *(t.options)(&mut translators) = TranslatorOptions {
                topic: Some(tr.topic.clone()),
                qos: Some(tr.qos),
            };
        }
        // Seconds outside its range cannot come from a flag or a file; shown as not set.
        let secs = |d: Duration| Seconds::try_from(d.as_secs_f64()).ok();
        let m = &c.mqtt;
        Options {
            listen: Some(c.listen.clone()),
            workers: Some(c.workers),
            expected_devices: Some(c.expected_devices),
            worker_queue: Some(c.worker_queue),
            recv_buffer: Some(c.recv_buffer),
            lifetime_min: Some(c.lifetime_min),
            lifetime_max: Some(c.lifetime_max),
            xml_dir: Some(c.xml_dir.clone()),
            mountpoint: Some(c.mountpoint.clone()),
            update_msg_publish_condition: Some(c.update_msg_publish_condition),
            write_encoding: Some(c.write_encoding),
            downlink_queue_max: Some(c.downlink_queue_max),
            downlink_queue_max_age: Some(c.downlink_queue_max_age.map_or(0, |d| d.as_secs())),
            qmode_time_window: secs(c.qmode_time_window),
            auto_observe: Some(c.auto_observe.clone()),
            translators,
            blockwise: BlockwiseOptions {
                block_size: Some(c.block_size),
                max_body: Some(c.block_max_body),
                total_max: Some(c.block_total_max),
            },
            coap: CoapOptions {
                ack_timeout: secs(c.coap.ack_timeout),
                ack_random_factor: Some(c.coap.ack_random_factor),
                max_retransmit: Some(c.coap.max_retransmit),
                separate_response_timeout: secs(c.separate_response_timeout),
                dedup_max_entries: Some(c.dedup_max_entries),
            },
            mqtt: MqttOptions {
                url: m.url.clone(),
                version: Some(m.version),
                broker_listen: Some(m.broker_listen),
                client_id: Some(m.client_id.clone()),
                username: m.username.clone(),
                password: m.password.clone().map(Secret),
                keep_alive: Some(m.keep_alive.as_secs()),
                inflight: Some(m.inflight),
                channel_capacity: Some(m.channel_capacity),
                max_packet_size: Some(m.max_packet_size),
                reconnect_min: secs(m.reconnect_min),
                reconnect_max: secs(m.reconnect_max),
            },
            dtls: DtlsOptions {
                listen: Some(c.dtls.listen.clone()),
                certificate: c.dtls.certificate.clone(),
                private_key: c.dtls.private_key.clone(),
                trust_anchors: Some(c.dtls.trust_anchors.clone()),
                max_handshakes: Some(c.dtls.max_handshakes),
                max_sessions: Some(c.dtls.max_sessions),
                handshake_timeout: secs(c.dtls.handshake_timeout),
                idle_timeout: secs(c.dtls.idle_timeout),
                connection_id: Some(c.dtls.connection_id),
            },
            security: SecurityOptions {
                credentials: c.security.credentials.clone(),
                plain_requires_credential: Some(c.security.plain_requires_credential),
                reload_interval: Some(c.security.reload_interval.as_secs()),
            },
            state: StateOptions {
                dir: Some(c.state.dir.clone().unwrap_or_default()),
                snapshot_interval: Some(c.state.snapshot_interval.as_secs()),
                journal_interval: secs(c.state.journal_interval),
            },
            limits: LimitsOptions {
                max_registrations: Some(c.limits.max_registrations),
                register_rate: Some(c.limits.register_rate),
                register_burst: Some(c.limits.register_burst),
                error_rate: Some(c.limits.error_rate),
                error_burst: Some(c.limits.error_burst),
                block_time: Some(c.limits.block_time.as_secs()),
                max_sources: Some(c.limits.max_sources),
                max_datagram: Some(c.limits.max_datagram),
            },
            http: HttpOptions {
                listen: Some(HttpListen(c.http.listen)),
                token: c.http.token.clone().map(Secret),
                cors_origin: c.http.cors_origin.clone(),
                threads: Some(c.http.threads),
                command_timeout: Some(c.http.command_timeout.as_secs()),
                max_event_streams: Some(c.http.max_event_streams),
            },
            log: LogOptions {
                level: Some(c.log_level.clone()),
                stats_interval: Some(c.stats_interval.as_secs()),
            },
        }
    }
}
