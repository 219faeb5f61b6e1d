//! Encoders for the backend messages the gateway writes itself (authentication,
//! parameter status, key data, ready-for-query). Engine replies are forwarded as
//! they come and never re-encoded.

/// Appends one backend message: tag, length (counting itself), body.
pub fn push_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

fn push_auth(out: &mut Vec<u8>, code: i32, extra: &[u8]) {
    let mut body = Vec::with_capacity(4 + extra.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(extra);
    push_message(out, b'R', &body);
}

pub fn authentication_ok(out: &mut Vec<u8>) {
    push_auth(out, 0, &[]);
}

pub fn authentication_md5(out: &mut Vec<u8>, salt: [u8; 4]) {
    push_auth(out, 5, &salt);
}

/// `AuthenticationSASL` offering the given mechanisms.
pub fn authentication_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    let mut list = Vec::new();
    for mechanism in mechanisms {
        list.extend_from_slice(mechanism.as_bytes());
        list.push(0);
    }
    list.push(0);
    push_auth(out, 10, &list);
}

pub fn authentication_sasl_continue(out: &mut Vec<u8>, data: &[u8]) {
    push_auth(out, 11, data);
}

pub fn authentication_sasl_final(out: &mut Vec<u8>, data: &[u8]) {
    push_auth(out, 12, data);
}

pub fn parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut body = Vec::with_capacity(name.len() + value.len() + 2);
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    body.push(0);
    push_message(out, b'S', &body);
}

pub fn backend_key_data(out: &mut Vec<u8>, process_id: i32, secret_key: i32) {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&process_id.to_be_bytes());
    body[4..].copy_from_slice(&secret_key.to_be_bytes());
    push_message(out, b'K', &body);
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    push_message(out, b'Z', &[status]);
}

/// `NegotiateProtocolVersion`: the newest version the gateway speaks (as
/// `major << 16 | minor`) and the protocol options (`_pq_.*`) it did not know.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, newest: i32, unrecognized: &[String]) {
    let mut body = Vec::new();
    body.extend_from_slice(&newest.to_be_bytes());
    body.extend_from_slice(&(unrecognized.len() as i32).to_be_bytes());
    for option in unrecognized {
        body.extend_from_slice(option.as_bytes());
        body.push(0);
    }
    push_message(out, b'v', &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut out = Vec::new();
        ready_for_query(&mut out, b'I');
        assert_eq!(out, b"Z\0\0\0\x05I");
    }

    #[test]
    fn sasl_mechanism_list_is_double_terminated() {
        let mut out = Vec::new();
        authentication_sasl(&mut out, &["SCRAM-SHA-256"]);
        assert_eq!(out, b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
    }

    #[test]
    fn negotiate_lists_unrecognized_options() {
        let mut out = Vec::new();
        negotiate_protocol_version(&mut out, 3 << 16, &["_pq_.x".to_string()]);
        assert_eq!(out, b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0");
    }
}
