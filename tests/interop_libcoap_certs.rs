//! Interop of the DTLS listener's certificate suites (ECDHE_ECDSA, P-256) with libcoap's
//! `coap-client-openssl` and `coap-client-gnutls`: X.509 device certificates checked against
//! the test CA (`tests/fixtures/pki`), the endpoint bound to the certificate's common name; and
//! raw public keys (RFC 7250, GnuTLS only: Debian's OpenSSL 3.0 has none) bound to the key in
//! the credential store. Refused: a certificate from an untrusted CA, a raw key nobody knows, and
//! either one registering as another endpoint.
//!
//! Without libcoap3-bin the tests say so and pass, except under CI (`.ci/run` installs it).

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;

use support::*;

fn pki(file: &str) -> String {
    repo_path("tests/fixtures/pki")
        .join(file)
        .display()
        .to_string()
}

fn have(bin: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing_tool(
            &format!("{bin} is not installed (Debian libcoap3-bin)"),
            "the libcoap certificate interop test",
        );
    }
    found
}

fn gateway() -> (PathGuard, TestGateway) {
    let dir = std::env::temp_dir().join(format!("gw-certs-{}-{}", std::process::id(), rand_u16()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentials.toml");
    let spki = std::fs::read_to_string(pki("rpk-dev.spki.b64")).unwrap();
    std::fs::write(
        &path,
        format!(
            "[[device]]\nendpoint = \"rpk-dev\"\nmode = \"rpk\"\npublic_key_base64 = \"{}\"\n\n\
             [[device]]\nendpoint = \"renamed\"\nmode = \"x509\"\ncommon_name = \"cert-dev-2\"\n",
            spki.trim()
        ),
    )
    .unwrap();
    let gw = TestGateway::start(None, |c| {
        c.security.credentials = Some(path);
        c.dtls.certificate = Some(pki("server.pem").into());
        c.dtls.private_key = Some(pki("server.key").into());
        c.dtls.trust_anchors = vec![pki("ca.pem").into()];
    });
    (PathGuard(dir), gw)
}

/// One Register by coap-client with `credential` flags: the response code, `None` when the
/// handshake was refused.
fn register(bin: &str, gw: &TestGateway, credential: &[String], ep: &str) -> Option<String> {
    let uri = format!("coaps://{}/rd?ep={ep}&lt=120&lwm2m=1.1", gw.dtls.unwrap());
    let out = Command::new("timeout")
        .args([
            "10", bin, "-v", "7", "-B", "4", "-m", "post", "-t", "40", "-e", "</3/0>",
        ])
        .args(credential)
        .arg(&uri)
        .output()
        .expect("run coap-client");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.contains("t:ACK c:"))?;
    Some(
        line.split("c:")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

fn x509(name: &str) -> Vec<String> {
    vec![
        "-c".into(),
        pki(&format!("{name}.pem")),
        "-j".into(),
        pki(&format!("{name}.key")),
        "-C".into(),
        pki("ca.pem"),
    ]
}

#[test]
fn x509_devices_register_under_their_common_name_and_nothing_else() {
    let (_dir, gw) = gateway();
    let obs = gw.observer();
    let m = gw.metrics();
    for bin in ["coap-client-openssl", "coap-client-gnutls"] {
        if !have(bin) {
            return;
        }
        assert_eq!(
            register(bin, &gw, &x509("cert-dev-1"), "cert-dev-1").as_deref(),
            Some("2.01"),
            "{bin}"
        );
        let (_, ev) = obs.next_of("register");
        assert_eq!(ev["data"]["ep"], "cert-dev-1");
        assert_eq!(ev["data"]["security"], "x509");
        // The CN names one endpoint only; a credential may rename it (cert-dev-2 -> renamed).
        assert_eq!(
            register(bin, &gw, &x509("cert-dev-1"), "cert-dev-2").as_deref(),
            Some("4.03"),
            "{bin}"
        );
        assert_eq!(
            register(bin, &gw, &x509("cert-dev-2"), "renamed").as_deref(),
            Some("2.01"),
            "{bin}"
        );
        assert_eq!(obs.next_of("register").1["data"]["ep"], "renamed");
        assert_eq!(
            register(bin, &gw, &x509("cert-dev-2"), "cert-dev-2").as_deref(),
            Some("4.03"),
            "{bin}"
        );
        // A chain to a CA the gateway does not trust: no session at all.
        let before = m.dtls_failed.load(Ordering::Relaxed);
        let mut rogue = x509("cert-dev-rogue");
        rogue[5] = pki("rogue-ca.pem");
        assert_eq!(register(bin, &gw, &rogue, "cert-dev-rogue"), None, "{bin}");
        wait_until("the rogue handshake counted", || {
            m.dtls_failed.load(Ordering::Relaxed) > before
        });
    }
}

#[test]
fn raw_public_key_devices_are_known_by_their_key() {
    let (_dir, gw) = gateway();
    let obs = gw.observer();
    let bin = "coap-client-gnutls";
    if !have(bin) {
        return;
    }
    let key = |f: &str| vec!["-M".to_string(), pki(f)];
    assert_eq!(
        register(bin, &gw, &key("rpk-dev.sec1.pem"), "rpk-dev").as_deref(),
        Some("2.01")
    );
    let (_, ev) = obs.next_of("register");
    assert_eq!(ev["data"]["ep"], "rpk-dev");
    assert_eq!(ev["data"]["security"], "rpk");
    assert_eq!(
        register(bin, &gw, &key("rpk-dev.sec1.pem"), "cert-dev-1").as_deref(),
        Some("4.03")
    );
    assert_eq!(
        register(bin, &gw, &key("rpk-other.sec1.pem"), "rpk-dev"),
        None,
        "unknown key"
    );
}
