//! The web page (issue 13): plain HTML, CSS and JavaScript compiled into the binary, no build
//! step and nothing fetched from elsewhere. It lists the devices live (from the API and
//! `/events`), shows a device's objects and resources named from the object definitions, and
//! reads, writes, executes and observes them through the same API.

use super::Reply;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Only the page's own resources: scripts and styles from this origin, API calls to it.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

pub fn page() -> Reply {
    Reply::new(200, "text/html; charset=utf-8", INDEX.as_bytes().to_vec())
        .header("Content-Security-Policy", CSP)
}

pub fn asset(name: &str) -> Reply {
    match name {
        "app.js" => Reply::new(
            200,
            "text/javascript; charset=utf-8",
            APP_JS.as_bytes().to_vec(),
        ),
        "style.css" => Reply::new(
            200,
            "text/css; charset=utf-8",
            STYLE_CSS.as_bytes().to_vec(),
        ),
        _ => Reply::error(404, "NOT_FOUND", "no such file"),
    }
}
