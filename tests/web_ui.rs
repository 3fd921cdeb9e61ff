//! The web page (issue 13) in a real browser: Debian's Chromium, headless, driven by
//! `tests/ui/page-check.js` (npm playwright-core), against a running gateway with a real LwM2M
//! client (npm lwm2m-node-lib). With the page already open, the device registers: the page
//! must show it as it appears (live, from `/events`), read its manufacturer through
//! the page's own Read button and show the value, and show the device's events; a screenshot is
//! kept in `target/test-artifacts/web-ui.png`. A second run with a token shows the page working
//! through it.
//!
//! Needs Chromium (`/usr/bin/chromium`, Debian package `chromium`) and Node.js; without them the
//! test says so and passes, except under CI (`CI` set), where it fails.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

fn chromium_ready() -> bool {
    let ok = std::path::Path::new("/usr/bin/chromium").exists();
    if !ok {
        missing_tool(
            "Chromium is not installed (/usr/bin/chromium)",
            "the web page test",
        );
    }
    ok
}

fn artifact(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target"))
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the page check against `gw` for `ep`; panics with its output unless it passes.
fn page_check(gw: &TestGateway, ep: &str, token: Option<&str>, shot: &str) {
    check_output(start_page_check(gw, ep, token, shot), shot);
}

/// Starts the page check (it loads the page at once, then waits up to 15 s for `ep`).
fn start_page_check(
    gw: &TestGateway,
    ep: &str,
    token: Option<&str>,
    shot: &str,
) -> std::process::Child {
    let url = format!("http://{}/", gw.http.unwrap());
    let shot = artifact(shot);
    let mut cmd = Command::new("node");
    cmd.arg(repo_path("tests/ui/page-check.js"))
        .args(["--url", &url, "--endpoint", ep, "--read-path", "/3/0/0"])
        .args(["--expect-value", "Open Mobile Alliance", "--screenshot"])
        .arg(&shot);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node tests/ui/page-check.js")
}

fn check_output(child: std::process::Child, shot: &str) {
    let shot = artifact(shot);
    let out = child.wait_with_output().expect("the page check ends");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the page check failed:\n{log}");
    assert!(log.contains("PASS"), "{log}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
}

#[test]
fn the_page_shows_a_real_device_and_reads_it() {
    if !chromium_ready()
        || !npm_ready("tests/ui", "playwright-core", "the web page test")
        || !npm_ready("tests/interop", "lwm2m-node-lib", "the web page test")
    {
        return;
    }
    let gw = TestGateway::start(None, |_| {});
    let ep = format!("web-{}", rand_u16());
    // The page is open before the device registers: it must appear in the list by itself.
    let check = start_page_check(&gw, &ep, None, "web-ui.png");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let c = ClientProcess::lwm2m_client("node", "node-client.js", &gw, &ep, 300, &[]);
    c.expect("REGISTERED rd/");
    check_output(check, "web-ui.png");
    // The page's Read went to the device.
    c.expect("READ /3/0/0");

    let guarded = TestGateway::start(None, |c| c.http.token = Some("ui-token".into()));
    let ep2 = format!("web-t-{}", rand_u16());
    let c2 = ClientProcess::lwm2m_client("node", "node-client.js", &guarded, &ep2, 300, &[]);
    c2.expect("REGISTERED rd/");
    page_check(&guarded, &ep2, Some("ui-token"), "web-ui-token.png");
    c2.expect("READ /3/0/0");
}
