//! Who may attach as a database's host: the bearer of an HS256 JSON Web Token
//! signed with the gateway's tunnel secret whose claim `db` names the
//! database, or of the database's own configured secret. Checked before the
//! WebSocket upgrade, so a refused host gets a plain 401.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The shortest tunnel secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    db: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Checks `token` for database `database`; `Err` says why it is refused.
pub fn verify(
    token: &str,
    database: &str,
    secret: Option<&str>,
    database_secret: Option<&str>,
) -> Result<(), String> {
    if let Some(own) = database_secret
        && bool::from(token.as_bytes().ct_eq(own.as_bytes()))
    {
        return Ok(());
    }
    let Some(secret) = secret else {
        return Err(match database_secret {
            Some(_) => "the token is not this database's tunnel secret".to_string(),
            None => format!(
                "no host may attach to \"{database}\": start pgshare with --tunnel-secret, or give the database a tunnel_secret"
            ),
        });
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|err| format!("the token is not valid: {err}"))?;
    if data.claims.db != database {
        return Err(format!(
            "the token is for database \"{}\", not \"{database}\"",
            data.claims.db
        ));
    }
    Ok(())
}

/// A token for database `database`, valid for `valid_for` (or without
/// expiry).
pub fn issue(secret: &str, database: &str, valid_for: Option<Duration>) -> anyhow::Result<String> {
    let exp = valid_for.map(|valid_for| {
        (SystemTime::now() + valid_for)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    });
    let claims = Claims {
        db: database.to_string(),
        exp,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_opens_only_its_own_database() {
        let token = issue(SECRET, "app", None).unwrap();
        assert_eq!(verify(&token, "app", Some(SECRET), None), Ok(()));
        assert!(verify(&token, "other", Some(SECRET), None).is_err());
        let forged = issue("another secret of thirty-two chars!", "app", None).unwrap();
        assert!(verify(&forged, "app", Some(SECRET), None).is_err());
        assert!(verify("not a token", "app", Some(SECRET), None).is_err());
        assert!(verify(&token, "app", None, None).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = issue(SECRET, "app", Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(verify(&token, "app", Some(SECRET), None), Ok(()));
        let claims = Claims {
            db: "app".into(),
            exp: Some(1_000_000),
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let err = verify(&expired, "app", Some(SECRET), None).unwrap_err();
        assert!(err.contains("xpired"), "{err}");
    }

    #[test]
    fn a_database_secret_is_a_token_for_that_database() {
        assert_eq!(
            verify("own secret", "app", None, Some("own secret")),
            Ok(())
        );
        assert!(verify("wrong", "app", None, Some("own secret")).is_err());
        assert!(verify("wrong", "app", Some(SECRET), Some("own secret")).is_err());
    }
}
