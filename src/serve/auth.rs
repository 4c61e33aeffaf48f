//! Bearer-token auth for `/api/`: tokens are known only by their SHA-256
//! digests, compared in constant time; a request carries who it was (the
//! token's name, never the token) into its handler and the request log.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Serve;

/// The environment variable holding comma-separated accepted tokens.
pub const TOKENS_ENV: &str = "DDB_AUDIT_API_TOKENS";

/// Who a request was made as: its token's name and what it may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// `None`: every table.
    pub tables: Option<BTreeSet<String>>,
}

impl Principal {
    pub fn may_read(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(table))
    }
}

struct Known {
    digest: [u8; 32],
    principal: Principal,
}

/// The accepted tokens, as digests.
pub struct Tokens {
    known: Vec<Known>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "`serve` accepts no token: list SHA-256 digests in [serve] token_sha256 (or [[serve.tokens]]), \
         or set {TOKENS_ENV}=token1,token2"
    )]
    NoTokens,
    #[error("{TOKENS_ENV} holds an empty token (check for a stray comma)")]
    EmptyEnvToken,
}

impl Tokens {
    /// From the config's digests and `env_tokens` (the value of
    /// [`TOKENS_ENV`], if set). Digests were checked by config validation.
    pub fn new(config: &Serve, env_tokens: Option<&str>) -> Result<Tokens, AuthConfigError> {
        let mut known = Vec::new();
        let all = |name: String| Principal { name, tables: None };
        for (i, hex_digest) in config.token_sha256.iter().enumerate() {
            if let Some(digest) = parse_digest(hex_digest) {
                known.push(Known {
                    digest,
                    principal: all(format!("token_sha256[{i}]")),
                });
            }
        }
        for t in &config.tokens {
            if let Some(digest) = parse_digest(&t.sha256) {
                known.push(Known {
                    digest,
                    principal: Principal {
                        name: t.name.clone(),
                        tables: t.tables.as_ref().map(|v| v.iter().cloned().collect()),
                    },
                });
            }
        }
        if let Some(list) = env_tokens.filter(|s| !s.trim().is_empty()) {
            for (i, token) in list.split(',').enumerate() {
                let token = token.trim();
                if token.is_empty() {
                    return Err(AuthConfigError::EmptyEnvToken);
                }
                known.push(Known {
                    digest: sha256(token.as_bytes()),
                    principal: all(format!("{TOKENS_ENV}[{i}]")),
                });
            }
        }
        if known.is_empty() {
            return Err(AuthConfigError::NoTokens);
        }
        Ok(Tokens { known })
    }

    /// The principal whose token this is. Every known digest is compared,
    /// each in constant time, so timing says nothing about which (or how
    /// much of one) matched.
    pub fn check(&self, token: &str) -> Option<&Principal> {
        let digest = sha256(token.as_bytes());
        let mut found = None;
        for k in &self.known {
            if bool::from(k.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(&k.principal);
            }
        }
        found
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// Middleware for `/api/`: 401 unless a known bearer token is presented;
/// the principal goes into the request's extensions.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(principal) = presented.and_then(|t| tokens.check(t)).cloned() else {
        tracing::info!(
            method = %request.method(),
            path = %request.uri().path(),
            status = 401,
            presented = presented.is_some(),
            "api request refused: no valid bearer token"
        );
        return unauthorized();
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"ddb-audit\"")],
        axum::Json(serde_json::json!({
            "error": "a valid `Authorization: Bearer <token>` header is required"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeToken;

    fn hex_of(token: &str) -> String {
        hex::encode(sha256(token.as_bytes()))
    }

    #[test]
    fn digests_and_env_tokens_are_accepted_by_name_and_nothing_else() {
        let config = Serve {
            token_sha256: vec![hex_of("alpha")],
            tokens: vec![ServeToken {
                name: "support".into(),
                sha256: hex_of("beta"),
                tables: Some(vec!["orders".into()]),
            }],
            ..Serve::default()
        };
        let tokens = Tokens::new(&config, Some("gamma, delta")).unwrap();
        assert_eq!(tokens.check("alpha").unwrap().name, "token_sha256[0]");
        let support = tokens.check("beta").unwrap();
        assert_eq!(support.name, "support");
        assert!(support.may_read("orders") && !support.may_read("payments"));
        assert_eq!(
            tokens.check("delta").unwrap().name,
            "DDB_AUDIT_API_TOKENS[1]"
        );
        for wrong in [
            "",
            "alph",
            "alphaa",
            "ALPHA",
            &hex_of("alpha"),
            "gamma,delta",
        ] {
            assert!(tokens.check(wrong).is_none(), "{wrong:?} accepted");
        }
    }

    #[test]
    fn no_token_at_all_is_a_start_up_error_naming_both_sources() {
        let e = Tokens::new(&Serve::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("token_sha256") && e.contains(TOKENS_ENV), "{e}");
        let e = Tokens::new(&Serve::default(), Some("a,,b"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("empty token"), "{e}");
    }
}
