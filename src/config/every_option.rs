//! Tests of the promise "every option has exactly one flag and one file key, and `--help` shows
//! its default from `Config::default()`", checked over the real clap command and serde shape so
//! that a new option cannot skip any of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde_json::Value;

use super::cli::{at_key, defaults_tree, render};
use super::*;

/// Dotted paths of the leaves of a JSON tree.
fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn option_args() -> Vec<clap::Arg> {
    Args::command()
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .cloned()
        .collect()
}

#[test]
fn every_flag_is_one_file_key_and_every_key_one_flag() {
    let mut keys = Vec::new();
    leaves(
        &serde_json::to_value(Options::default()).unwrap(),
        "",
        &mut keys,
    );
    let keys: BTreeSet<String> = keys.into_iter().map(|(k, _)| k).collect();
    let args = option_args();
    let ids: BTreeSet<String> = args.iter().map(|a| a.get_id().to_string()).collect();
    assert_eq!(ids, keys, "arg ids must be the file keys");
    assert_eq!(ids.len(), args.len());
    let mut flags = BTreeSet::new();
    for a in &args {
        let long = a
            .get_long()
            .unwrap_or_else(|| panic!("{} has no flag", a.get_id()));
        assert!(flags.insert(long.to_string()), "--{long} twice");
    }
    // Users' configs and scripts: these names must keep working.
    for (flag, key) in [
        ("coap-ack-timeout", "coap.ack_timeout"),
        ("qos-notify", "translators.notify.qos"),
        ("topic-notify", "translators.notify.topic"),
        ("block-size", "blockwise.block_size"),
        ("block-max-body", "blockwise.max_body"),
        ("log-level", "log.level"),
        ("stats-interval", "log.stats_interval"),
        ("mqtt-url", "mqtt.url"),
        ("broker-listen", "mqtt.broker_listen"),
        ("coap-dedup-max-entries", "coap.dedup_max_entries"),
        ("mqtt-max-packet-size", "mqtt.max_packet_size"),
        ("mqtt-reconnect-min", "mqtt.reconnect_min"),
        ("mqtt-reconnect-max", "mqtt.reconnect_max"),
    ] {
        let a = args.iter().find(|a| a.get_long() == Some(flag));
        assert_eq!(a.map(|a| a.get_id().as_str()), Some(key), "--{flag}");
    }
}

#[test]
fn every_flag_help_ends_with_its_key_and_default() {
    let tree = defaults_tree();
    for a in option_args() {
        let id = a.get_id().as_str();
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let default = render(at_key(&tree, id).unwrap_or(&Value::Null));
        let suffix = format!(" [key: {id}] [default: {default}]");
        assert!(help.ends_with(&suffix), "--{id}: {help:?}");
        assert_eq!(help.matches("[default:").count(), 1, "{help:?}");
        assert!(
            a.get_long_help().is_none(),
            "--{id} has a long help without the default"
        );
    }
    let help = Args::command().render_long_help().to_string();
    assert!(help.contains("--coap-ack-timeout <S>"), "{help}");
    assert!(help.contains("[default: 2.0]") && help.contains("[default: lwm2m/%e/]"));
}

#[test]
fn password_env_value_is_hidden() {
    let cmd = Args::command();
    let a = cmd
        .get_arguments()
        .find(|a| a.get_id() == "mqtt.password")
        .expect("password flag");
    assert_eq!(
        a.get_env().and_then(|e| e.to_str()),
        Some("LWM2M_GATEWAY_MQTT_PASSWORD")
    );
    assert!(a.is_hide_env_values_set());
}

#[test]
fn secrets_never_show_in_debug_help_or_the_defaults_tree() {
    let c = everything_changed();
    let debug = format!("{c:?}");
    // Debug escapes the quotes: `tok \"en\"`, `pw \"quoted\"`.
    assert!(!debug.contains(r#"tok \"en"#), "{debug}");
    assert!(!debug.contains(r#"pw \"quoted"#), "{debug}");
    let shown = serde_json::to_string(&Options::from_config(&c)).unwrap();
    assert!(
        !shown.contains(r#"tok \"en"#) && !shown.contains(r#"pw \"quoted"#),
        "{shown}"
    );
    let cmd = Args::command();
    let token = cmd
        .get_arguments()
        .find(|a| a.get_id() == "http.token")
        .expect("token flag");
    assert_eq!(
        token.get_env().and_then(|e| e.to_str()),
        Some("LWM2M_GATEWAY_HTTP_TOKEN")
    );
    assert!(token.is_hide_env_values_set());
}

/// A configuration with every field away from its default; no `..`, so a new field must be
/// added here.
fn everything_changed() -> Config {
    let t = |topic: &str, qos: u8| Translator {
        topic: topic.into(),
        qos,
    };
    Config {
        listen: vec![
            "127.0.0.1:5684".parse().unwrap(),
            "[::1]:5685".parse().unwrap(),
        ],
        workers: 3,
        expected_devices: 1000,
        worker_queue: 77,
        recv_buffer: 1 << 16,
        lifetime_min: 30,
        lifetime_max: 3000,
        xml_dir: PathBuf::from("objects"),
        mountpoint: "gw/%e/".into(),
        translators: Translators {
            command: t("cmd/#", 0),
            response: t("r", 2),
            notify: t("n", 0),
            register: t("reg", 2),
            update: t("upd", 0),
            deregister: t("dereg", 2),
        },
        update_msg_publish_condition: UpdatePublishCondition::ContainsObjectList,
        write_encoding: WriteEncoding::Tlv,
        coap: TransmissionParams {
            ack_timeout: Duration::from_millis(1500),
            ack_random_factor: 2.0,
            max_retransmit: 7,
        },
        separate_response_timeout: Duration::from_secs(60),
        dedup_max_entries: 999,
        downlink_queue_max: 5,
        downlink_queue_max_age: None,
        qmode_time_window: Duration::from_millis(2500),
        auto_observe: AutoObserve::Paths(vec!["/3/0".into(), "/3303/0".into()]),
        block_size: 64,
        block_max_body: 4096,
        block_total_max: 1 << 16,
        mqtt: MqttConfig {
            url: Some("mqtt://broker:1999".into()),
            version: MqttVersion::V5,
            broker_listen: "127.0.0.1:11883".parse().unwrap(),
            client_id: "gw-7".into(),
            username: Some("user".into()),
            password: Some("pw \"quoted\"".into()),
            keep_alive: Duration::from_secs(45),
            inflight: 10,
            channel_capacity: 20,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(8),
            max_packet_size: 1 << 16,
        },
        dtls: DtlsConfig {
            listen: vec![
                "127.0.0.1:15684".parse().unwrap(),
                "[::1]:15685".parse().unwrap(),
            ],
            certificate: Some(PathBuf::from("gw.crt")),
            private_key: Some(PathBuf::from("gw.key")),
            trust_anchors: vec![PathBuf::from("ca1.pem"), PathBuf::from("ca2.pem")],
            max_handshakes: 12,
            max_sessions: 34,
            handshake_timeout: Duration::from_secs(9),
            idle_timeout: Duration::from_secs(600),
            connection_id: false,
        },
        security: SecurityConfig {
            credentials: Some(PathBuf::from("creds.toml")),
            plain_requires_credential: true,
            reload_interval: Duration::ZERO,
        },
        state: StateConfig {
            dir: Some(PathBuf::from("/var/lib/lwm2m-gateway")),
            snapshot_interval: Duration::from_secs(5),
            journal_interval: Duration::from_millis(250),
        },
        limits: LimitsConfig {
            max_registrations: 5_000,
            register_rate: 7,
            register_burst: 70,
            error_rate: 3,
            error_burst: 30,
            block_time: Duration::from_secs(4),
            max_sources: 900,
            max_datagram: 1500,
        },
        http: HttpConfig {
            listen: Some("0.0.0.0:9090".parse().unwrap()),
            token: Some("tok \"en\"".into()),
            cors_origin: Some("https://ops.example.com".into()),
            threads: 7,
            command_timeout: Duration::from_secs(12),
            max_event_streams: 3,
        },
        log_level: "debug".into(),
        stats_interval: Duration::ZERO,
    }
}

/// `everything_changed` as (key, value) leaves, the password in clear.
fn changed_leaves() -> Vec<(String, Value)> {
    let c = everything_changed();
    let mut out = Vec::new();
    leaves(
        &serde_json::to_value(Options::from_config(&c)).unwrap(),
        "",
        &mut out,
    );
    for (k, v) in &mut out {
        if k == "mqtt.password" {
            *v = Value::String(c.mqtt.password.clone().unwrap());
        }
        if k == "http.token" {
            *v = Value::String(c.http.token.clone().unwrap());
        }
    }
    out
}

#[test]
fn options_round_trip_every_config_field() {
    let c = everything_changed();
    let mut back = Config::default();
    Options::from_config(&c).apply(&mut back);
    assert_eq!(back, c);
    let mut defaults = Vec::new();
    leaves(&defaults_tree(), "", &mut defaults);
    for ((k, v), (_, d)) in changed_leaves().iter().zip(&defaults) {
        assert_ne!(v, d, "{k}: pick a non-default value in everything_changed");
    }
}

#[test]
fn every_config_field_is_reachable_by_flags() {
    let mut argv = vec!["lwm2m-gateway".to_string()];
    let cmd = Args::command();
    for (key, v) in changed_leaves() {
        let long = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .and_then(|a| a.get_long())
            .unwrap();
        match v {
            Value::Array(items)
                if key == "listen" || key == "dtls.listen" || key == "dtls.trust_anchors" =>
            {
                for i in items {
                    argv.extend([format!("--{long}"), render(&i)]);
                }
            }
            v => argv.extend([format!("--{long}"), render(&v)]),
        }
    }
    let c = Config::from_parts(None, &Args::parse_from(argv)).unwrap();
    assert_eq!(c, everything_changed());
}

/// A JSON leaf as a TOML value: JSON's strings, numbers, booleans and arrays are TOML's too.
fn toml_value(v: &Value) -> String {
    v.to_string()
}

#[test]
fn every_config_field_is_reachable_by_file_keys() {
    let mut text = String::new();
    for (key, v) in changed_leaves() {
        // Dotted keys are TOML: `mqtt.keep_alive = 45` sets key keep_alive of table mqtt.
        text.push_str(&format!("{key} = {}\n", toml_value(&v)));
    }
    let c = Config::from_parts(Some((Path::new("all.toml"), &text)), &Args::default()).unwrap();
    assert_eq!(c, everything_changed(), "{text}");
}

/// The rows of README's configuration table: (key, flag, default) with backticks removed.
fn readme_rows() -> Vec<(String, String, String)> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a configuration section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l.split('|').map(|c| c.trim().replace('`', "")).collect();
            let flag = cells[2].split([' ', ',']).next().unwrap_or("").to_string();
            (cells[1].clone(), flag, cells[3].clone())
        })
        .collect()
}

#[test]
fn readme_table_matches_the_code() {
    let tree = defaults_tree();
    let cmd = Args::command();
    let rows = readme_rows();
    let keys: BTreeSet<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
    let ids: BTreeSet<String> = option_args()
        .iter()
        .map(|a| a.get_id().to_string())
        .collect();
    assert_eq!(
        keys,
        ids.iter().map(String::as_str).collect(),
        "README keys"
    );
    for (key, flag, default) in &rows {
        let a = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .unwrap();
        assert_eq!(Some(flag.trim_start_matches('-')), a.get_long(), "{key}");
        if key != "workers" {
            let code = render(at_key(&tree, key).unwrap_or(&Value::Null));
            assert_eq!(default, &code, "README default of {key}");
        }
    }
}
