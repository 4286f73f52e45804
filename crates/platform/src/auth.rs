//! Caller identity from a bearer JWT, never from a request field.
//!
//! Tokens are signed with Ed25519 (`alg: EdDSA`). Every service holds only the
//! public key and checks the signature, the key id (`kid`), the issuer, the
//! audience and the expiry. Three kinds of caller exist:
//!
//! | role (`role` claim) | identity |
//! |---|---|
//! | `customer` | the customer id is the subject (`sub`) |
//! | `store_staff` | the store is the `store_id` claim; `sub` names the staff member |
//! | `operator` | an operator of the platform; `sub` names them |
//!
//! [`TokenIssuer`] signs tokens for the `foodmesh token` command and for tests;
//! no service holds the private key.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

/// How a service checks tokens. Part of every service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The expected `iss` claim.
    pub issuer: String,
    /// The expected `aud` claim.
    pub audience: String,
    /// The expected `kid` header: the id of the key below.
    pub key_id: String,
    /// The Ed25519 public key, PEM (SubjectPublicKeyInfo).
    pub public_key_file: PathBuf,
}

/// Who is calling, as proven by their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A customer of the platform.
    Customer {
        /// The customer id: the token's subject.
        customer_id: String,
    },
    /// A member of a store's staff.
    StoreStaff {
        /// The staff member: the token's subject.
        staff_id: String,
        /// The store they work for.
        store_id: String,
    },
    /// An operator of the platform.
    Operator {
        /// The operator: the token's subject.
        operator_id: String,
    },
}

impl Principal {
    /// The customer id, if the caller is a customer.
    pub fn customer(&self) -> Result<&str, AuthError> {
        match self {
            Principal::Customer { customer_id } => Ok(customer_id),
            _ => Err(AuthError::WrongRole { needed: "customer" }),
        }
    }

    /// The store id, if the caller is store staff.
    pub fn store_staff(&self) -> Result<&str, AuthError> {
        match self {
            Principal::StoreStaff { store_id, .. } => Ok(store_id),
            _ => Err(AuthError::WrongRole { needed: "store_staff" }),
        }
    }

    /// The operator id, if the caller is an operator.
    pub fn operator(&self) -> Result<&str, AuthError> {
        match self {
            Principal::Operator { operator_id } => Ok(operator_id),
            _ => Err(AuthError::WrongRole { needed: "operator" }),
        }
    }

    /// The token's subject, whatever the role; used in logs.
    pub fn subject(&self) -> &str {
        match self {
            Principal::Customer { customer_id } => customer_id,
            Principal::StoreStaff { staff_id, .. } => staff_id,
            Principal::Operator { operator_id } => operator_id,
        }
    }
}

/// Why a caller could not be identified, or is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer ...` metadata.
    #[error("missing bearer token in the authorization metadata")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The signature, key id, issuer, audience or claims are wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The caller is identified but has the wrong role for this call.
    #[error("this call needs a {needed} token")]
    WrongRole {
        /// The role the call needs.
        needed: &'static str,
    },
}

impl AuthError {
    /// A stable, UPPER_SNAKE reason for the `ErrorInfo` detail.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "TOKEN_MISSING",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::Invalid(_) => "TOKEN_INVALID",
            AuthError::WrongRole { .. } => "ROLE_NOT_ALLOWED",
        }
    }
}

/// Could not load a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is not an Ed25519 key in PEM.
    #[error("{path} is not an Ed25519 PEM key: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: jsonwebtoken::errors::Error,
    },
    /// Generating or encoding a key failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    iat: u64,
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store_id: Option<String>,
}

/// Checks bearer tokens. Cheap to clone; clones share a cache of tokens
/// already verified (a signature check costs tens of microseconds, and a client
/// sends the same token with every call until it expires).
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    key_id: String,
    validation: Validation,
    verified: Arc<Mutex<HashMap<String, (Principal, u64)>>>,
}

/// The most tokens remembered; the cache is emptied when it is full.
const VERIFIED_CACHE: usize = 10_000;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads the public key named in the settings.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, KeyError> {
        let path = &settings.public_key_file;
        let pem = std::fs::read(path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
        Self::from_public_pem(&pem, settings).map_err(|source| KeyError::Format { path: path.clone(), source })
    }

    /// Builds a verifier from a public key in PEM.
    pub fn from_public_pem(pem: &[u8], settings: &AuthSettings) -> Result<Self, jsonwebtoken::errors::Error> {
        let key = DecodingKey::from_ed_pem(pem)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self { key, key_id: settings.key_id.clone(), validation, verified: Arc::default() })
    }

    /// Identifies the caller of a gRPC request from its metadata.
    pub fn verify(&self, metadata: &MetadataMap) -> Result<Principal, AuthError> {
        let header = metadata.get("authorization").ok_or(AuthError::Missing)?;
        let header = header.to_str().map_err(|_| AuthError::Invalid("authorization is not ASCII".into()))?;
        let token = bearer_token(header).ok_or(AuthError::Missing)?;
        self.verify_token(token)
    }

    /// Checks one token; a token verified before is trusted until it expires.
    pub fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((principal, exp)) = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token)
            && *exp > now
        {
            return Ok(principal.clone());
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_owned(), (principal.clone(), exp));
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.kid.as_deref() != Some(self.key_id.as_str()) {
            return Err(AuthError::Invalid("unknown key id".into()));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject".into()));
        }
        // Trusted until expiry minus the leeway the validation allowed.
        let exp = claims.exp;
        let principal = match (claims.role.as_str(), claims.store_id) {
            ("customer", _) => Principal::Customer { customer_id: claims.sub },
            ("store_staff", Some(store_id)) if !store_id.is_empty() => Principal::StoreStaff { staff_id: claims.sub, store_id },
            ("store_staff", _) => return Err(AuthError::Invalid("store_staff token without store_id".into())),
            ("operator", _) => Principal::Operator { operator_id: claims.sub },
            (other, _) => return Err(AuthError::Invalid(format!("unknown role {other:?}"))),
        };
        Ok((principal, exp))
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Signs tokens with the private key. Used by `foodmesh token` and by tests;
/// services never hold it.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    key_id: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer from a PKCS#8 PEM private key and the claims every token carries.
    pub fn from_private_pem(pem: &[u8], key_id: &str, issuer: &str, audience: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(pem)?,
            key_id: key_id.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `principal`, valid for `ttl`.
    pub fn issue(&self, principal: &Principal, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        self.issue_at(principal, now, now + ttl.as_secs())
    }

    /// A token with explicit issue and expiry times (seconds since the epoch),
    /// so tests can make expired tokens.
    pub fn issue_at(&self, principal: &Principal, iat: u64, exp: u64) -> Result<String, jsonwebtoken::errors::Error> {
        let (role, store_id) = match principal {
            Principal::Customer { .. } => ("customer", None),
            Principal::StoreStaff { store_id, .. } => ("store_staff", Some(store_id.clone())),
            Principal::Operator { .. } => ("operator", None),
        };
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: principal.subject().to_owned(),
            exp,
            iat,
            role: role.to_owned(),
            store_id,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// A new Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_keypair() -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Generate(e.to_string()))?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
    let public = signing.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok((private.to_string(), public))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            issuer: "foodmesh-test".into(),
            audience: "foodmesh".into(),
            key_id: "k1".into(),
            public_key_file: PathBuf::new(),
        }
    }

    fn pair() -> (TokenIssuer, Verifier) {
        let (private, public) = generate_keypair().expect("keygen");
        let s = settings();
        let issuer = TokenIssuer::from_private_pem(private.as_bytes(), &s.key_id, &s.issuer, &s.audience).expect("issuer");
        (issuer, Verifier::from_public_pem(public.as_bytes(), &s).expect("verifier"))
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().expect("ascii"));
        m
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn each_role_round_trips_through_a_token() {
        let (issuer, verifier) = pair();
        for principal in [
            Principal::Customer { customer_id: "alice".into() },
            Principal::StoreStaff { staff_id: "bob".into(), store_id: "seoul-bbq".into() },
            Principal::Operator { operator_id: "ops".into() },
        ] {
            let token = issuer.issue(&principal, HOUR).expect("sign");
            assert_eq!(verifier.verify(&metadata(&format!("Bearer {token}"))), Ok(principal));
        }
    }

    #[test]
    fn missing_or_non_bearer_authorization_is_missing() {
        let (_, verifier) = pair();
        assert_eq!(verifier.verify(&MetadataMap::new()), Err(AuthError::Missing));
        assert_eq!(verifier.verify(&metadata("Basic dXNlcjpwYXNz")), Err(AuthError::Missing));
    }

    #[test]
    fn a_token_signed_by_another_key_is_invalid() {
        let (_, verifier) = pair();
        let (other_issuer, _) = pair();
        let token = other_issuer.issue(&Principal::Customer { customer_id: "mallory".into() }, HOUR).expect("sign");
        assert!(matches!(verifier.verify_token(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn an_expired_token_is_expired() {
        let (issuer, verifier) = pair();
        let now = jsonwebtoken::get_current_timestamp();
        let token = issuer.issue_at(&Principal::Customer { customer_id: "a".into() }, now - 7200, now - 3600).expect("sign");
        assert_eq!(verifier.verify_token(&token), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_issuer_audience_or_key_id_is_invalid() {
        let (private, public) = generate_keypair().expect("keygen");
        let verifier = Verifier::from_public_pem(public.as_bytes(), &settings()).expect("verifier");
        let customer = Principal::Customer { customer_id: "a".into() };
        for (kid, iss, aud) in
            [("k1", "someone-else", "foodmesh"), ("k1", "foodmesh-test", "other"), ("k2", "foodmesh-test", "foodmesh")]
        {
            let issuer = TokenIssuer::from_private_pem(private.as_bytes(), kid, iss, aud).expect("issuer");
            let token = issuer.issue(&customer, HOUR).expect("sign");
            assert!(matches!(verifier.verify_token(&token), Err(AuthError::Invalid(_))), "{kid} {iss} {aud}");
        }
    }

    #[test]
    fn a_tampered_token_is_invalid() {
        let (issuer, verifier) = pair();
        let token = issuer.issue(&Principal::Customer { customer_id: "alice".into() }, HOUR).expect("sign");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Re-encode the claims with another subject, keeping the old signature.
        let forged = base64_url(
            br#"{"iss":"foodmesh-test","aud":"foodmesh","sub":"mallory","exp":99999999999,"iat":0,"role":"customer"}"#,
        );
        parts[1] = forged;
        assert!(matches!(verifier.verify_token(&parts.join(".")), Err(AuthError::Invalid(_))));
        assert!(matches!(verifier.verify_token("not-a-jwt"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn the_cache_is_trusted_only_until_the_token_expires() {
        let (issuer, verifier) = pair();
        let alice = Principal::Customer { customer_id: "alice".into() };
        let token = issuer.issue(&alice, HOUR).expect("sign");
        let now = jsonwebtoken::get_current_timestamp();
        // A planted entry shows whether the cache was consulted.
        let plant = |exp: u64| {
            verifier
                .verified
                .lock()
                .expect("lock")
                .insert(token.clone(), (Principal::Operator { operator_id: "planted".into() }, exp));
        };
        plant(now + 60);
        assert!(matches!(verifier.verify_token(&token), Ok(Principal::Operator { .. })), "a live entry is used");
        plant(now - 1);
        assert_eq!(verifier.verify_token(&token), Ok(alice), "an expired entry is verified again");
    }

    #[test]
    fn roles_are_checked_by_the_accessors() {
        let staff = Principal::StoreStaff { staff_id: "s".into(), store_id: "x".into() };
        assert_eq!(staff.customer(), Err(AuthError::WrongRole { needed: "customer" }));
        assert_eq!(staff.store_staff(), Ok("x"));
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
