//! Who may subscribe, as pg_reactive's proxy decides it: the bearer of an
//! HS256 JSON Web Token signed with the realtime secret (claim `sub`
//! required, `exp` honoured), or of the anon key (role `anon`), and only
//! when the subscription's audience matches the claims. Browsers are held
//! to the allowed origins. Every refusal is an HTTP status before any
//! upgrade.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::config::RealtimeSettings;

/// The claims of whoever subscribes.
pub type Claims = Map<String, Value>;

/// A refusal: the status and the reason, sent as `{"error": reason}`.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

fn anon() -> Claims {
    let mut claims = Claims::new();
    claims.insert("role".into(), Value::String("anon".into()));
    claims
}

/// The claims of the request's token or key.
pub fn authenticate(
    settings: &RealtimeSettings,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Claims, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(secret) = &settings.secret else {
        // Open: only served on loopback (see `realtime::Realtime::open`).
        return Ok(anon());
    };
    let is_anon_key = |presented: &str| {
        settings
            .anon_key
            .as_deref()
            .is_some_and(|key| bool::from(presented.as_bytes().ct_eq(key.as_bytes())))
    };
    let anon_key = params
        .get("apikey")
        .map(String::as_str)
        .or(bearer.filter(|b| is_anon_key(b)));
    let token = params
        .get("token")
        .map(String::as_str)
        .or(bearer.filter(|b| !is_anon_key(b)));
    if let Some(token) = token {
        return verify(secret, token);
    }
    match anon_key {
        Some(key) if is_anon_key(key) => {
            if settings.require_auth {
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "the anon key is not accepted here: present a signed token",
                ))
            } else {
                Ok(anon())
            }
        }
        Some(_) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the apikey is not valid",
        )),
        None => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "no token: give one as ?token= or in an Authorization: Bearer header",
        )),
    }
}

fn verify(secret: &str, token: &str) -> Result<Claims, Refusal> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims = ["sub".to_string()].into();
    validation.validate_exp = true;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|err| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!("the token is not valid: {err}"),
        )
    })
}

/// Whether `claims` match every key of the subscription's `audience`.
pub fn admitted(audience: Option<&Value>, claims: &Claims) -> Result<(), Refusal> {
    let Some(Value::Object(wanted)) = audience else {
        return Ok(());
    };
    for (key, value) in wanted {
        if claims.get(key) != Some(value) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this live query is not for you: its audience needs claim \"{key}\" = {value}"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a browser page of the request's `Origin` may subscribe.
pub fn origin_allowed(settings: &RealtimeSettings, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let allowed = if settings.allowed_origins.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        host.is_some() && origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host.unwrap_or("")))
    } else {
        settings
            .allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("origin {origin} may not subscribe: add it to --realtime-allowed-origins"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> RealtimeSettings {
        RealtimeSettings {
            secret: Some(SECRET.into()),
            anon_key: Some("anon-key".into()),
            ..RealtimeSettings::default()
        }
    }

    fn token(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn status(result: Result<Claims, Refusal>) -> u16 {
        match result {
            Ok(_) => 200,
            Err(refusal) => refusal.status.as_u16(),
        }
    }

    #[test]
    fn tokens_need_sub_a_good_signature_and_no_past_exp() {
        let s = settings();
        let none = HeaderMap::new();
        let good = token(json!({"sub": "42"}), SECRET);
        assert_eq!(
            authenticate(&s, &params(&[("token", &good)]), &none).unwrap()["sub"],
            "42"
        );
        let no_sub = token(json!({"role": "x"}), SECRET);
        assert_eq!(
            status(authenticate(&s, &params(&[("token", &no_sub)]), &none)),
            401
        );
        let forged = token(json!({"sub": "42"}), "another-secret-another-secret-xx");
        assert_eq!(
            status(authenticate(&s, &params(&[("token", &forged)]), &none)),
            401
        );
        let expired = token(json!({"sub": "42", "exp": 1_000_000}), SECRET);
        assert_eq!(
            status(authenticate(&s, &params(&[("token", &expired)]), &none)),
            401
        );
        assert_eq!(
            status(authenticate(&s, &params(&[("token", "garbage")]), &none)),
            401
        );
        assert_eq!(status(authenticate(&s, &params(&[]), &none)), 401);
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            format!("Bearer {good}").parse().unwrap(),
        );
        assert_eq!(status(authenticate(&s, &params(&[]), &bearer)), 200);
    }

    #[test]
    fn the_anon_key_gives_role_anon_unless_auth_is_required() {
        let mut s = settings();
        let none = HeaderMap::new();
        let claims = authenticate(&s, &params(&[("apikey", "anon-key")]), &none).unwrap();
        assert_eq!(claims["role"], "anon");
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer anon-key".parse().unwrap());
        assert_eq!(status(authenticate(&s, &params(&[]), &bearer)), 200);
        assert_eq!(
            status(authenticate(&s, &params(&[("apikey", "wrong")]), &none)),
            401
        );
        s.require_auth = true;
        assert_eq!(
            status(authenticate(&s, &params(&[("apikey", "anon-key")]), &none)),
            403
        );
    }

    #[test]
    fn an_audience_admits_only_matching_claims() {
        let claims: Claims = serde_json::from_value(json!({"sub": "42", "team": "a"})).unwrap();
        assert!(admitted(None, &claims).is_ok());
        assert!(admitted(Some(&json!({"sub": "42"})), &claims).is_ok());
        assert!(admitted(Some(&json!({"sub": "42", "team": "b"})), &claims).is_err());
        assert!(admitted(Some(&json!({"sub": "42"})), &anon()).is_err());
    }

    #[test]
    fn browsers_of_other_origins_are_refused() {
        let mut s = settings();
        let mut headers = HeaderMap::new();
        assert!(
            origin_allowed(&s, &headers).is_ok(),
            "no Origin: not a browser"
        );
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(origin_allowed(&s, &headers).is_ok(), "same origin");
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(origin_allowed(&s, &headers).unwrap_err().status, 403);
        s.allowed_origins = vec!["https://evil.example".into()];
        assert!(origin_allowed(&s, &headers).is_ok());
    }
}
