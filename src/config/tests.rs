//! Behaviour of the whole configuration layer as a user meets it: flags and file merged over the
//! defaults, spellings, and errors that name the option. That every option has a flag, a key and
//! a shown default is tested in `cli.rs` and `convert.rs`.

use std::path::Path;
use std::time::Duration;

use clap::Parser;

use super::*;

fn args(v: &[&str]) -> Args {
    let mut all = vec!["lwm2m-gateway"];
    all.extend_from_slice(v);
    Args::parse_from(all)
}

/// The error of flags clap refuses, as clap prints it.
fn flag_error(v: &[&str]) -> String {
    let mut all = vec!["lwm2m-gateway"];
    all.extend_from_slice(v);
    Args::try_parse_from(all).unwrap_err().to_string()
}

fn from_file(name: &str, toml: &str) -> Result<Config, ConfigError> {
    Config::from_parts(Some((Path::new(name), toml)), &args(&[]))
}

fn from_flags(v: &[&str]) -> Result<Config, ConfigError> {
    Config::from_parts(None, &args(v))
}

#[test]
fn defaults_are_valid_and_emqx_compatible() {
    let c = from_flags(&[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.mountpoint, "lwm2m/%e/");
    assert_eq!(c.translators.command.topic, "dn/#");
    assert_eq!(c.translators.notify.topic, "up/notify");
    assert_eq!(c.translators.register.qos, 1);
    assert_eq!(c.mqtt.url, None);
}

#[test]
fn flags_override_file() {
    let toml = r#"
        workers = 3
        lifetime_max = 1000
        mountpoint = "gw/%e/"
        [translators.notify]
        topic = "up/n"
        qos = 0
        [coap]
        ack_timeout = 0.5
        [mqtt]
        url = "mqtt://broker:1884"
        reconnect_max = 60
        [log]
        level = "debug"
    "#;
    let c = Config::from_parts(
        Some((Path::new("t.toml"), toml)),
        &args(&[
            "--workers",
            "5",
            "--qos-notify",
            "2",
            "--mqtt-reconnect-max",
            "7.5",
        ]),
    )
    .unwrap();
    assert_eq!(c.workers, 5);
    assert_eq!(c.lifetime_max, 1000);
    assert_eq!(c.mountpoint, "gw/%e/");
    assert_eq!(
        c.translators.notify,
        Translator {
            topic: "up/n".into(),
            qos: 2
        }
    );
    assert_eq!(c.coap.ack_timeout, Duration::from_millis(500));
    assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://broker:1884"));
    assert_eq!(c.mqtt.reconnect_max, Duration::from_millis(7500));
    assert_eq!(c.log_level, "debug");
}

#[test]
fn rejects_bad_values_with_the_option_name() {
    let bad = |v: &[&str]| from_flags(v).unwrap_err().to_string();
    let e = bad(&["--workers", "0"]);
    assert!(e.contains("workers") && e.contains("(--workers)"), "{e}");
    let e = bad(&["--lifetime-min", "10", "--lifetime-max", "5"]);
    assert!(e.contains("lifetime_min"), "{e}");
    let e = bad(&["--qos-response", "3"]);
    assert!(
        e.contains("translators.response.qos") && e.contains("--qos-response"),
        "{e}"
    );
    let e = bad(&["--mqtt-url", "ws://x"]);
    assert!(e.contains("mqtt.url (--mqtt-url)"), "{e}");
    let e = bad(&["--topic-command", "dn/#", "--mountpoint", "lwm2m/"]);
    assert!(e.contains("translators.command"), "{e}");
    let e = bad(&["--block-size", "100"]);
    assert!(e.contains("blockwise.block_size (--block-size)"), "{e}");
    let e = bad(&["--mqtt-max-packet-size", "10"]);
    assert!(e.contains("mqtt.max_packet_size"), "{e}");
    let e = bad(&["--mqtt-reconnect-min", "5", "--mqtt-reconnect-max", "1"]);
    assert!(e.contains("mqtt.reconnect_min"), "{e}");
    let e = bad(&["--log-level", "loud"]);
    assert!(e.contains("log.level (--log-level)"), "{e}");

    // Values a parser refuses: clap names the flag, the file error its key, line and file.
    let e = flag_error(&["--coap-ack-timeout=-1"]);
    assert!(
        e.contains("--coap-ack-timeout") && e.contains("seconds"),
        "{e}"
    );
    let e = flag_error(&["--qmode-time-window", "soon"]);
    assert!(e.contains("--qmode-time-window"), "{e}");
    let e = from_file("c.toml", "[coap]\nack_timeout = 0")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.toml") && e.contains("ack_timeout") && e.contains("seconds"),
        "{e}"
    );
    let e = from_file("c.toml", "[mqtt]\nreconnect_min = -1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("reconnect_min") && e.contains("seconds"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    for (toml, key) in [
        ("wokers = 1", "wokers"),
        ("[coap]\nack_timout = 2", "ack_timout"),
        ("[mqtt]\npasword = \"x\"", "pasword"),
        ("[translators.notfy]\ntopic = \"x\"", "notfy"),
        ("[translators.notify]\ntopik = \"x\"", "topik"),
        ("[blockwise]\nsize = 16", "size"),
        ("[log]\nlvl = \"info\"", "lvl"),
        ("[logging]\nlevel = \"info\"", "logging"),
    ] {
        let e = from_file("x.toml", toml).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains(key), "{toml}: {e}");
    }
}

#[test]
fn enum_values_accept_emqx_and_kebab_spellings_in_flags_and_file() {
    use UpdatePublishCondition::*;
    for (v, want) in [
        ("always", Always),
        ("contains_object_list", ContainsObjectList),
        ("contains-object-list", ContainsObjectList),
    ] {
        let c = from_flags(&["--update-msg-publish-condition", v]).unwrap();
        assert_eq!(c.update_msg_publish_condition, want, "flag {v}");
        let toml = format!("update_msg_publish_condition = {v:?}");
        let c = from_file("u.toml", &toml).unwrap();
        assert_eq!(c.update_msg_publish_condition, want, "file {v}");
    }
    for (v, want) in [
        ("auto", MqttVersion::Auto),
        ("3.1.1", MqttVersion::V311),
        ("v4", MqttVersion::V311),
        ("5", MqttVersion::V5),
        ("v5", MqttVersion::V5),
    ] {
        assert_eq!(
            from_flags(&["--mqtt-version", v]).unwrap().mqtt.version,
            want
        );
        let toml = format!("[mqtt]\nversion = {v:?}");
        assert_eq!(from_file("v.toml", &toml).unwrap().mqtt.version, want);
    }
    // Without the option: MQTT 5 preferred, 3.1.1 when the broker refuses it.
    assert_eq!(from_flags(&[]).unwrap().mqtt.version, MqttVersion::Auto);
    assert_eq!(Config::default().mqtt.version, MqttVersion::Auto);
    let e = flag_error(&["--update-msg-publish-condition", "sometimes"]);
    assert!(e.contains("--update-msg-publish-condition"), "{e}");
    let e = flag_error(&["--mqtt-version", "4"]);
    assert!(e.contains("--mqtt-version"), "{e}");
    let e = from_file("v.toml", "[mqtt]\nversion = \"6\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("v.toml") && e.contains("version"), "{e}");
}

#[test]
fn new_mqtt_options_from_flags_and_file() {
    let c = from_flags(&[
        "--mqtt-max-packet-size",
        "65536",
        "--mqtt-reconnect-min",
        "0.25",
        "--mqtt-reconnect-max",
        "5",
    ])
    .unwrap();
    assert_eq!(c.mqtt.max_packet_size, 65536);
    assert_eq!(c.mqtt.reconnect_min, Duration::from_millis(250));
    assert_eq!(c.mqtt.reconnect_max, Duration::from_secs(5));
    let c = from_file(
        "m.toml",
        "[mqtt]\nmax_packet_size = 2048\nreconnect_min = 1\nreconnect_max = 2.5",
    )
    .unwrap();
    assert_eq!(c.mqtt.max_packet_size, 2048);
    assert_eq!(c.mqtt.reconnect_min, Duration::from_secs(1));
    assert_eq!(c.mqtt.reconnect_max, Duration::from_millis(2500));
}

#[test]
fn password_from_flag_or_file_never_shown() {
    let a = args(&["--mqtt-password", "s3cret-flag"]);
    let c = Config::from_parts(None, &a).unwrap();
    assert_eq!(c.mqtt.password.as_deref(), Some("s3cret-flag"));
    assert!(!format!("{a:?}").contains("s3cret"), "{a:?}");
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    let c = from_file(
        "p.toml",
        "[mqtt]\nusername = \"u\"\npassword = \"s3cret-file\"",
    )
    .unwrap();
    assert_eq!(c.mqtt.password.as_deref(), Some("s3cret-file"));
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
}

#[test]
fn readme_example_config_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a toml example") + 8;
    let end = start + readme[start..].find("```").expect("the toml block ends");
    let c = from_file("README.md", &readme[start..end]).unwrap();
    assert_eq!(c.workers, 4);
    assert_eq!(c.expected_devices, 100_000);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
}

#[test]
fn auto_observe_spellings() {
    let file = |t: &str| from_file("a.toml", t).map(|c| c.auto_observe);
    assert_eq!(file("auto_observe = true").unwrap(), AutoObserve::All);
    assert_eq!(file("auto_observe = \"off\"").unwrap(), AutoObserve::Off);
    assert_eq!(
        file("auto_observe = [\"/3/0\", \"/3303/0/5700\"]").unwrap(),
        AutoObserve::Paths(vec!["/3/0".into(), "/3303/0/5700".into()])
    );
    assert_eq!(
        file("auto_observe = \"/3/0, /4\"").unwrap(),
        AutoObserve::Paths(vec!["/3/0".into(), "/4".into()])
    );
    let e = file("auto_observe = [\"/3/x\"]").unwrap_err().to_string();
    assert!(e.contains("auto_observe") && e.contains("/3/x"), "{e}");
    let e = file("auto_observe = 3").unwrap_err().to_string();
    assert!(e.contains("auto_observe"), "{e}");
    let e = flag_error(&["--auto-observe", "/3/x"]);
    assert!(e.contains("--auto-observe"), "{e}");
    let c = from_flags(&[
        "--auto-observe",
        "on",
        "--qmode-time-window",
        "5",
        "--downlink-queue-max-age",
        "0",
    ])
    .unwrap();
    assert_eq!(
        (
            c.auto_observe,
            c.qmode_time_window,
            c.downlink_queue_max_age
        ),
        (AutoObserve::All, Duration::from_secs(5), None)
    );
    let c = from_flags(&["--auto-observe", "/3/0,/3303/0"]).unwrap();
    assert_eq!(
        c.auto_observe,
        AutoObserve::Paths(vec!["/3/0".into(), "/3303/0".into()])
    );
}

#[test]
fn mqtt_urls() {
    assert_eq!(parse_mqtt_url("mqtt://h:1884").unwrap(), ("h".into(), 1884));
    assert_eq!(parse_mqtt_url("h").unwrap(), ("h".into(), 1883));
    assert_eq!(
        parse_mqtt_url("mqtt://[::1]:1900").unwrap(),
        ("::1".into(), 1900)
    );
    assert!(parse_mqtt_url("mqtts://h").is_err());
    assert!(parse_mqtt_url("mqtt://h:x").is_err());
}

#[test]
fn dtls_settings_are_checked_and_plain_coap_may_be_off_only_with_dtls_on() {
    let mut c = Config::default();
    c.listen.clear();
    assert!(c.validate().is_ok(), "DTLS only");
    c.dtls.listen.clear();
    assert!(c.validate().unwrap_err().to_string().contains("listen"));
    type Breaks = (&'static str, fn(&mut Config));
    let bad: [Breaks; 5] = [
        ("dtls.max_handshakes", |c| c.dtls.max_handshakes = 0),
        ("dtls.max_sessions", |c| c.dtls.max_sessions = 0),
        ("dtls.handshake_timeout", |c| {
            c.dtls.handshake_timeout = Duration::ZERO
        }),
        ("dtls.certificate", |c| {
            c.dtls.certificate = Some("gw.pem".into())
        }),
        ("dtls.trust_anchors", |c| {
            c.dtls.trust_anchors = vec!["ca.pem".into()]
        }),
    ];
    for (key, f) in bad {
        let mut c = Config::default();
        f(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn an_empty_state_dir_keeps_nothing_in_the_file_and_on_the_command_line() {
    assert_eq!(
        Config::default().state.dir,
        Some(std::path::PathBuf::from("data"))
    );
    assert_eq!(from_flags(&["--state-dir", ""]).unwrap().state.dir, None);
    assert_eq!(
        from_file("c.toml", "[state]\ndir = \"\"\n")
            .unwrap()
            .state
            .dir,
        None
    );
    assert_eq!(
        from_flags(&["--state-dir", "/srv/gw"]).unwrap().state.dir,
        Some(std::path::PathBuf::from("/srv/gw"))
    );
}
