//! Interop of the DTLS listener with libcoap's command-line client, `coap-client-openssl` and
//! `coap-client-gnutls` (Debian `libcoap3-bin`): the same client program on two independent
//! DTLS stacks. Each registers over PSK (`POST /rd`), then updates and deregisters at the
//! location it was given; a wrong key, an unknown identity and another endpoint's identity are
//! refused. Certificates (`-c`/`-j`/`-C`) are covered by `interop_libcoap_certs.rs`.
//!
//! coap-client makes one request per run and exits, so it cannot answer the gateway's reads;
//! the aiocoap/tinydtls client in `interop_aiocoap_dtls.rs` is read and observed.
//!
//! Without libcoap3-bin the tests say so and pass, except under CI (`.ci/run` installs it).

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;

use support::*;

const KEY: &str = "libcoap-psk-key1";

fn client(stack: &str) -> Option<String> {
    let bin = format!("coap-client-{stack}");
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(bin);
    }
    missing_tool(
        &format!("{bin} is not installed (Debian libcoap3-bin)"),
        "the libcoap DTLS interop test",
    );
    None
}

fn credentials() -> (PathGuard, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("gw-libcoap-{}-{}", std::process::id(), rand_u16()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentials.json");
    let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
    let devices: Vec<_> = ["openssl", "gnutls"]
        .iter()
        .map(|s| {
            serde_json::json!({"endpoint": format!("lc-{s}"), "mode": "psk",
                               "identity": format!("id-{s}"), "key_hex": hex})
        })
        .collect();
    std::fs::write(&path, serde_json::json!({ "devices": devices }).to_string()).unwrap();
    (PathGuard(dir), path)
}

/// One coap-client run: the response code it printed (`2.01`, `4.03`...) and the Location-Path
/// segments, or `None` when no response came (handshake refused).
fn request(
    bin: &str,
    gw: &TestGateway,
    identity: &str,
    key: &str,
    method: &str,
    path_and_query: &str,
    payload: Option<&str>,
) -> Option<(String, Vec<String>)> {
    let uri = format!("coaps://{}{path_and_query}", gw.dtls.unwrap());
    let mut cmd = Command::new("timeout");
    cmd.args([
        "10", bin, "-v", "7", "-B", "5", "-m", method, "-u", identity, "-k", key,
    ]);
    if let Some(p) = payload {
        cmd.args(["-t", "40", "-e", p]);
    }
    let out = cmd.arg(&uri).output().expect("run coap-client");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The response line: "v:1 t:ACK c:2.01 i:87d8 {01} [ Location-Path:rd, Location-Path:769 ]"
    let line = text
        .lines()
        .find(|l| l.contains("t:ACK c:") || l.contains("t:NON c:"))?;
    let code = line
        .split("c:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    let location = line
        .split("Location-Path:")
        .skip(1)
        .map(|s| s.split([',', ' ', ']']).next().unwrap_or("").to_string())
        .collect();
    Some((code, location))
}

#[test]
fn libcoap_clients_register_update_and_deregister_over_psk() {
    let (_dir, path) = credentials();
    let gw = TestGateway::start(None, |c| c.security.credentials = Some(path.clone()));
    let obs = gw.observer();
    for stack in ["openssl", "gnutls"] {
        let Some(bin) = client(stack) else { return };
        let (ep, id) = (format!("lc-{stack}"), format!("id-{stack}"));
        let q = format!("/rd?ep={ep}&lt=120&lwm2m=1.1&b=U");
        let (code, loc) = request(&bin, &gw, &id, KEY, "post", &q, Some("</1/0>,</3/0>"))
            .unwrap_or_else(|| panic!("{bin}: no answer to Register"));
        assert_eq!(code, "2.01", "{bin}");
        assert_eq!(loc[0], "rd");
        let (_, ev) = obs.next_of("register");
        assert_eq!(ev["data"]["ep"], ep.as_str());
        assert_eq!(ev["data"]["security"], "psk");
        let upd = format!("/rd/{}?lt=300", loc[1]);
        let (code, _) = request(&bin, &gw, &id, KEY, "post", &upd, None).unwrap();
        assert_eq!(code, "2.04", "{bin} Update");
        let del = format!("/rd/{}", loc[1]);
        let (code, _) = request(&bin, &gw, &id, KEY, "delete", &del, None).unwrap();
        assert_eq!(code, "2.02", "{bin} De-register");
        assert_eq!(obs.next_of("deregister").1["data"]["ep"], ep.as_str());
    }
}

#[test]
fn libcoap_clients_are_refused_with_a_wrong_key_an_unknown_identity_or_another_endpoints_identity()
{
    let (_dir, path) = credentials();
    let gw = TestGateway::start(None, |c| c.security.credentials = Some(path.clone()));
    let m = gw.metrics();
    for stack in ["openssl", "gnutls"] {
        let Some(bin) = client(stack) else { return };
        let id = format!("id-{stack}");
        let q = format!("/rd?ep=lc-{stack}&lt=120");
        let before = m.dtls_failed.load(Ordering::Relaxed);
        assert_eq!(
            request(&bin, &gw, &id, "wrong-key-123456", "post", &q, None),
            None,
            "{bin} wrong key"
        );
        assert_eq!(
            request(&bin, &gw, "nobody", KEY, "post", &q, None),
            None,
            "{bin} unknown identity"
        );
        wait_until("both handshakes counted as failed", || {
            m.dtls_failed.load(Ordering::Relaxed) >= before + 2
        });
        // A valid identity registering as the other client's endpoint.
        let other = if stack == "openssl" {
            "gnutls"
        } else {
            "openssl"
        };
        let q = format!("/rd?ep=lc-{other}&lt=120");
        let (code, _) = request(&bin, &gw, &id, KEY, "post", &q, None).unwrap();
        assert_eq!(code, "4.03", "{bin} as another endpoint");
    }
    wait_until("refusals counted", || {
        m.forbidden.load(Ordering::Relaxed) >= 2
    });
}
