//! JWT verification for WebSocket clients.
//!
//! Which key checks a token follows from the token's `alg`, never from the token alone: HS*
//! tokens only ever meet `auth.hmac_secret`; RS*/PS*/ES*/EdDSA tokens meet the JWKS key named by
//! `kid`, else `auth.public_key_file`. The accepted algorithm list is exactly the header's
//! algorithm, and only when the key is of that algorithm's family, so an RS256 public key can
//! never be used as an HMAC secret (the classic key-confusion attack), and `alg: none` is refused.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind};
use serde::Deserialize;

use crate::access::jwks::Jwks;
use crate::settings::AuthSettings;

/// Who a connection is, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub user: Option<String>,
    /// The `channels` claim: patterns this token may subscribe (and, where a rule says `token`,
    /// publish) to.
    pub channels: Vec<String>,
    /// The `exp` claim, in Unix seconds.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Whether the token's `channels` claim covers `channel`.
    pub fn grants(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| hubbub::config::glob_match(p, channel))
    }
}

/// Why a token was refused, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, TokenError> {
    Err(TokenError(why.into()))
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// Checks tokens against the configured keys and claims.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    public: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl Verifier {
    /// Loads the keys `[auth]` names and starts the JWKS refresher (needs a Tokio runtime when a
    /// JWKS URL is set).
    pub fn new(auth: &AuthSettings) -> anyhow::Result<Verifier> {
        let public = match &auth.public_key_file {
            None => None,
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| anyhow::anyhow!("auth.public_key_file {}: {e}", path.display()))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .or_else(|_| DecodingKey::from_ec_pem(&pem))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "auth.public_key_file {}: not a PEM RSA, EC or Ed25519 public key",
                            path.display()
                        )
                    })?;
                Some(key)
            }
        };
        Ok(Verifier {
            hmac: auth.hmac_secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes())),
            public,
            jwks: auth.jwks_url.as_ref().map(|url| Jwks::start(url.clone(), auth.jwks_refresh, auth.jwks_min_refresh)),
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway: auth.leeway.as_secs(),
        })
    }

    /// Verifies `token`: signature, `exp`, `nbf`, `aud`, `iss`; returns who it names.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = match decode_header(token) {
            Ok(h) => h,
            Err(_) if declares_alg_none(token) => return refuse("alg \"none\" is not accepted: tokens must be signed"),
            Err(e) => return refuse(format!("not a valid JWT ({e})")),
        };
        let alg = header.alg;
        let family = alg.family();
        let key = match (family, &header.kid, &self.jwks) {
            (jsonwebtoken::AlgorithmFamily::Hmac, _, _) => match &self.hmac {
                Some(k) => k.clone(),
                None => return refuse(format!("{alg:?} tokens are not accepted here (no auth.hmac_secret)")),
            },
            (_, Some(kid), Some(jwks)) => jwks.key(kid).await?,
            _ => match &self.public {
                Some(k) => k.clone(),
                None if header.kid.is_none() && self.jwks.is_some() => {
                    return refuse("the token has no \"kid\"; the hub's keys come from a JWKS and are picked by kid");
                }
                None => return refuse(format!("{alg:?} tokens are not accepted here (no public key configured)")),
            },
        };
        if key.family() != family {
            return refuse(format!("alg {alg:?} does not match the key it would be checked with"));
        }
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.validate_exp = true;
        let mut required: Vec<&str> = Vec::new();
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, &key, &v).map_err(|e| TokenError(describe(e.kind())))?;
        let c = data.claims;
        Ok(Identity { user: c.sub, channels: c.channels.unwrap_or_default(), expires_at: c.exp })
    }
}

/// `decode_header` cannot represent `alg: none`; look at the raw header to say so plainly.
fn declares_alg_none(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(|a| a.eq_ignore_ascii_case("none")))
        .unwrap_or(false)
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired (exp is in the past)".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidSignature => "signature does not match".into(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("claim {c:?} is missing"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c:?} has the wrong type"),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted for this key".into(),
        ErrorKind::Json(e) => format!("claims are not valid ({e})"),
        other => format!("invalid token ({other:?})"),
    }
}

/// Algorithms by family, for docs and tests.
pub const ALGORITHMS: &[Algorithm] = &[
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
