//! CoAP response codes as the MQTT contract spells them: `"2.05"` and EMQX 5.x `codeMsg` names.

pub const EMPTY: u8 = 0x00;
pub const GET: u8 = 0x01;
pub const POST: u8 = 0x02;
pub const PUT: u8 = 0x03;
pub const DELETE: u8 = 0x04;
pub const FETCH: u8 = 0x05;
pub const IPATCH: u8 = 0x07;

pub const CREATED: u8 = 0x41;
pub const DELETED: u8 = 0x42;
pub const CHANGED: u8 = 0x44;
pub const CONTENT: u8 = 0x45;
pub const CONTINUE: u8 = 0x5F;
pub const BAD_REQUEST: u8 = 0x80;
pub const BAD_OPTION: u8 = 0x82;
pub const FORBIDDEN: u8 = 0x83;
pub const NOT_FOUND: u8 = 0x84;
pub const METHOD_NOT_ALLOWED: u8 = 0x85;
pub const NOT_ACCEPTABLE: u8 = 0x86;
pub const REQUEST_ENTITY_INCOMPLETE: u8 = 0x88;
pub const PRECONDITION_FAILED: u8 = 0x8C;
pub const REQUEST_ENTITY_TOO_LARGE: u8 = 0x8D;
pub const UNSUPPORTED_CONTENT_FORMAT: u8 = 0x8F;
/// 4.29 Too Many Requests (RFC 8516), with Max-Age saying when to try again.
pub const TOO_MANY_REQUESTS: u8 = 0x9D;
pub const INTERNAL_SERVER_ERROR: u8 = 0xA0;
pub const SERVICE_UNAVAILABLE: u8 = 0xA3;

pub fn class(code: u8) -> u8 {
    code >> 5
}

pub fn is_request(code: u8) -> bool {
    class(code) == 0 && code != EMPTY
}

pub fn is_response(code: u8) -> bool {
    matches!(class(code), 2..=5)
}

pub fn is_success(code: u8) -> bool {
    class(code) == 2
}

/// `"C.DD"` form, e.g. `0x45` -> `"2.05"`.
pub fn to_string(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1f)
}

/// EMQX 5.x `codeMsg` for a code; codes EMQX has no name for get a generic name derived from the
/// class so that nothing a device answers is lost.
pub fn name(code: u8) -> &'static str {
    match code {
        0x01 => "get",
        0x02 => "post",
        0x03 => "put",
        0x04 => "delete",
        0x41 => "created",
        0x42 => "deleted",
        0x43 => "valid",
        0x44 => "changed",
        0x45 => "content",
        0x5F => "continue",
        0x80 => "bad_request",
        0x81 => "unauthorized",
        0x82 => "bad_option",
        0x83 => "forbidden",
        0x84 => "not_found",
        0x85 => "method_not_allowed",
        0x86 => "not_acceptable",
        0x88 => "request_entity_incomplete",
        0x89 => "conflict",
        0x8C => "precondition_failed",
        0x8D => "request_entity_too_large",
        0x8F => "unsupported_content_format",
        0x9D => "too_many_requests",
        0xA0 => "internal_server_error",
        0xA1 => "not_implemented",
        0xA2 => "bad_gateway",
        0xA3 => "service_unavailable",
        0xA4 => "gateway_timeout",
        0xA5 => "proxying_not_supported",
        c if class(c) == 2 => "success",
        c if class(c) == 4 => "client_error",
        c if class(c) == 5 => "server_error",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_strings() {
        assert_eq!(to_string(CONTENT), "2.05");
        assert_eq!(to_string(0xA3), "5.03");
        assert_eq!(name(0x81), "unauthorized");
        assert_eq!(name(0x8C), "precondition_failed");
        assert_eq!(name(0x47), "success");
        assert!(is_request(GET) && !is_request(EMPTY) && !is_request(CONTENT));
        assert!(is_response(CONTENT) && is_response(0xA0) && !is_response(0x20));
    }
}
