//! Server side of PostgreSQL's `md5` password method. Some clients and
//! `pg_hba.conf`-style setups still ask for it: the server sends
//! AuthenticationMD5Password with a 4-byte salt and the client answers with a
//! salted double MD5 of its password and user name, which the gateway checks
//! against the password it knows.

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The PasswordMessage payload a client sends in reply to
/// AuthenticationMD5Password: `"md5" + hex(md5(hex(md5(password ++ user)) ++ salt))`.
///
/// `user` is the user name from the startup message.
pub fn md5_password_hash(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize();
    let outer = Md5::new()
        .chain_update(format!("{inner:x}"))
        .chain_update(salt)
        .finalize();
    format!("md5{outer:x}")
}

/// Whether `response` (the client's PasswordMessage text) proves knowledge of
/// `password` for `user` under `salt`. The comparison takes the same time
/// wherever the first differing byte is.
pub fn verify_md5_response(user: &str, password: &str, salt: [u8; 4], response: &str) -> bool {
    let expected = md5_password_hash(user, password, salt);
    expected.as_bytes().ct_eq(response.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    const CASES: &[(&str, &str, [u8; 4])] = &[
        ("md5_user", "password", [0x2a, 0x3d, 0x8f, 0xe0]),
        ("alice", "s3cret", [1, 2, 3, 4]),
        ("postgres", "", [0, 0, 0, 0]),
        ("bob", "pässwörd with spaces", [0xff, 0xfe, 0x00, 0x7f]),
    ];

    #[test]
    fn matches_client_library() {
        for &(user, password, salt) in CASES {
            assert_eq!(
                md5_password_hash(user, password, salt),
                md5_hash(user.as_bytes(), password.as_bytes(), salt),
                "user {user:?}"
            );
        }
    }

    #[test]
    fn matches_independently_computed_values() {
        // python3: "md5" + md5(md5(p + u).hexdigest().encode() + salt).hexdigest()
        assert_eq!(
            md5_password_hash("md5_user", "password", [0x2a, 0x3d, 0x8f, 0xe0]),
            "md562af4dd09bbb41884907a838a3233294"
        );
        assert_eq!(
            md5_password_hash("alice", "s3cret", [1, 2, 3, 4]),
            "md5b79948bbeb35dee03ab8fe15a839030b"
        );
    }

    #[test]
    fn verifies_client_response() {
        for &(user, password, salt) in CASES {
            let response = md5_hash(user.as_bytes(), password.as_bytes(), salt);
            assert!(verify_md5_response(user, password, salt, &response));
        }
    }

    #[test]
    fn rejects_wrong_responses() {
        let salt = [1, 2, 3, 4];
        let good = md5_password_hash("alice", "s3cret", salt);
        assert!(!verify_md5_response("alice", "wrong", salt, &good));
        assert!(!verify_md5_response("mallory", "s3cret", salt, &good));
        assert!(!verify_md5_response("alice", "s3cret", [4, 3, 2, 1], &good));
        let accepts = |response: &str| verify_md5_response("alice", "s3cret", salt, response);
        assert!(accepts(&good));
        assert!(!accepts(""));
        assert!(!accepts(&good[..good.len() - 1]));
        assert!(!accepts(&format!("{good}0")));
        assert!(!accepts(&good.to_uppercase()));
        assert!(!accepts("s3cret"));
    }
}
