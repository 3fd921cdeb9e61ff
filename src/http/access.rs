//! Who may use the HTTP API, and from which web origin.
//!
//! - With `http.token`, every request but the public ones ([`is_public`]: `/health` for
//!   orchestrators, the page and its assets, which hold no data) carries it as
//!   `Authorization: Bearer <token>` or, for a browser's `EventSource` that cannot set headers,
//!   `?token=<token>`. The comparison takes the same time whatever the guess. A missing or
//!   wrong token is 401 with `WWW-Authenticate: Bearer`; the token never appears in a log line
//!   or an answer.
//! - CORS headers only with `http.cors_origin` (none by default: a page on another origin
//!   cannot call the API from a browser).

use subtle::ConstantTimeEq;

use super::{Context, Reply, Req};

fn is_public(req: &Req) -> bool {
    let segs = req.segments();
    req.method == "GET" && matches!(segs.as_slice(), [] | ["health"] | ["ui", _])
}

/// Ok if `req` may go on.
pub fn check(ctx: &Context, req: &Req) -> Result<(), Reply> {
    let Some(token) = ctx.token.as_deref() else {
        return Ok(());
    };
    // A CORS preflight carries no credentials by design.
    if is_public(req) || (req.method == "OPTIONS" && ctx.cors_origin.is_some()) {
        return Ok(());
    }
    let given = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .or_else(|| req.param("token"));
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(
            Reply::error(401, "UNAUTHORIZED", "a valid bearer token is required")
                .header("WWW-Authenticate", "Bearer"),
        ),
    }
}

/// The answer to a CORS preflight (`OPTIONS`).
pub fn preflight(ctx: &Context) -> Reply {
    match &ctx.cors_origin {
        Some(_) => Reply::no_content()
            .header(
                "Access-Control-Allow-Methods",
                "GET, POST, PUT, DELETE, OPTIONS",
            )
            .header(
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type",
            )
            .header("Access-Control-Max-Age", "600"),
        None => Reply::error(405, "METHOD_NOT_ALLOWED", "CORS is off (http.cors_origin)"),
    }
}

pub fn with_cors(ctx: &Context, reply: Reply) -> Reply {
    match &ctx.cors_origin {
        Some(o) => reply
            .header("Access-Control-Allow-Origin", o)
            .header("Vary", "Origin"),
        None => reply,
    }
}
