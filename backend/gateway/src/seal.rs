//! Sealed session tokens: the client-facing `Mcp-Session-Id` of a stateless session (architecture
//! §6, `docs/decisions/0006-stateless-sessions.md`).
//!
//! A token is `base64url(len(key id) ‖ key id ‖ nonce ‖ ciphertext)` (no padding): one length byte,
//! the id of the tenant's session key that sealed it, a random 192-bit XChaCha20-Poly1305 nonce, and
//! the sealed [`SessionClaims`] (compact JSON) with its 16-byte tag. The associated data binds it to
//! the tenant and virtual server, so a token from one endpoint does not open at another. Every
//! failure to open (malformed, unknown key, tampered, other endpoint, expired) is the same 404 to
//! the client; the reason only reaches the debug log.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gatehouse_bundle::policy::SessionKeyMaterial;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A session is refused this long after `initialize`; its client initializes again (configurable
/// later).
pub(crate) const SESSION_LIFETIME_MS: i64 = gatehouse_bundle::format::SESSION_LIFETIME_MS;
/// Longer `Mcp-Session-Id`s are refused before any decoding.
pub(crate) const MAX_TOKEN_CHARS: usize = 8 * 1024;
/// The claims' format; a token of another format does not open.
const CLAIMS_FORMAT: u8 = 1;
/// Prefix of the associated data, so these keys can never open anything sealed for another purpose.
const AAD_PREFIX: &[u8] = b"gatehouse/mcp-session/v1";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// What a worker needs to serve a session, sealed into its `Mcp-Session-Id`. Field names are short
/// on the wire: the token travels with every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionClaims {
    #[serde(rename = "f")]
    pub format: u8,
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "s")]
    pub virtual_server: String,
    /// The user who initialized it; only that user may use it.
    #[serde(rename = "u")]
    pub user_id: String,
    /// The token that authenticated `initialize` (for audit; later requests may use another token
    /// of the same user).
    #[serde(rename = "k")]
    pub token_id: String,
    /// `clientInfo`, for audit.
    #[serde(rename = "cn", default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(rename = "cv", default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The protocol version negotiated with the client.
    #[serde(rename = "p")]
    pub protocol_version: String,
    /// The client's relayed capabilities (sampling, elicitation, roots), declared upstream.
    #[serde(rename = "c")]
    pub capabilities: Value,
    /// The upstream sessions opened at `initialize`.
    #[serde(rename = "up")]
    pub upstreams: Vec<SealedUpstream>,
    /// Unix milliseconds of `initialize`.
    #[serde(rename = "iat")]
    pub issued_at_ms: i64,
}

/// One upstream session, as sealed into the client's token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SealedUpstream {
    /// Upstream server slug.
    #[serde(rename = "s")]
    pub server: String,
    /// [`url_tag`] of the URL it was opened on: a bundle that moves the server invalidates it.
    #[serde(rename = "h")]
    pub url_tag: String,
    /// The upstream's `Mcp-Session-Id`, if it uses sessions.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The protocol version the upstream chose.
    #[serde(rename = "p")]
    pub protocol_version: String,
    /// The server capabilities it offered (names only: that is all later requests look at).
    #[serde(rename = "o")]
    pub offers: Vec<String>,
}

impl SealedUpstream {
    /// The capabilities object rebuilt from the names (`{"tools": {}, ...}`).
    pub(crate) fn capabilities(&self) -> Value {
        Value::Object(self.offers.iter().map(|name| (name.clone(), json!({}))).collect())
    }
}

/// A short tag of an upstream URL (8 hex digits of its SHA-256).
pub(crate) fn url_tag(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..4])
}

/// Why a token did not open (never told to the client: all of them are 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("not a session token")]
    Malformed,
    #[error("sealed with a key this tenant's bundle does not list (retired, or another tenant's)")]
    UnknownKey,
    #[error("does not open: tampered with, or sealed for another tenant or virtual server")]
    Forged,
    #[error("expired")]
    Expired,
}

/// The associated data: tenant and virtual server.
fn aad(tenant: &str, virtual_server: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + tenant.len() + virtual_server.len() + 2);
    aad.extend_from_slice(AAD_PREFIX);
    aad.push(0);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(virtual_server.as_bytes());
    aad
}

/// Seals `claims` with `key` (the tenant's newest), bound to the claims' tenant and virtual server.
pub(crate) fn seal(key: &SessionKeyMaterial, claims: &SessionClaims) -> String {
    let plaintext = serde_json::to_vec(claims).expect("session claims always serialise");
    let cipher = XChaCha20Poly1305::new((&key.key).into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = aad(&claims.tenant, &claims.virtual_server);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: &plaintext, aad: &aad })
        .expect("XChaCha20-Poly1305 encrypts any message this small");
    let id = key.id.as_bytes();
    let id_len =
        u8::try_from(id.len()).expect("session key ids are at most 255 bytes (checked when the bundle is built)");
    let mut token = Vec::with_capacity(1 + id.len() + NONCE_BYTES + sealed.len());
    token.push(id_len);
    token.extend_from_slice(id);
    token.extend_from_slice(&nonce);
    token.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(token)
}

/// Opens a token presented at `tenant`/`virtual_server` at time `now_ms` with any of `keys`.
/// Returns the claims and the id of the key that opened them.
pub(crate) fn open(
    keys: &[SessionKeyMaterial],
    tenant: &str,
    virtual_server: &str,
    token: &str,
    now_ms: i64,
) -> Result<(SessionClaims, String), OpenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(OpenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| OpenError::Malformed)?;
    let (&id_len, rest) = bytes.split_first().ok_or(OpenError::Malformed)?;
    let id_len = usize::from(id_len);
    if id_len == 0 || rest.len() < id_len + NONCE_BYTES + TAG_BYTES {
        return Err(OpenError::Malformed);
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, sealed) = rest.split_at(NONCE_BYTES);
    let key = keys.iter().find(|k| k.id.as_bytes() == id).ok_or(OpenError::UnknownKey)?;
    let cipher = XChaCha20Poly1305::new((&key.key).into());
    let aad = aad(tenant, virtual_server);
    let plaintext =
        cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &aad }).map_err(|_| OpenError::Forged)?;
    let claims: SessionClaims = serde_json::from_slice(&plaintext).map_err(|_| OpenError::Malformed)?;
    // The associated data already binds these; checked again so a mistake there cannot widen it.
    if claims.format != CLAIMS_FORMAT || claims.tenant != tenant || claims.virtual_server != virtual_server {
        return Err(OpenError::Forged);
    }
    if expired(claims.issued_at_ms, now_ms) {
        return Err(OpenError::Expired);
    }
    Ok((claims, key.id.clone()))
}

/// True once a session issued at `issued_at_ms` has lived [`SESSION_LIFETIME_MS`].
pub(crate) fn expired(issued_at_ms: i64, now_ms: i64) -> bool {
    now_ms >= issued_at_ms.saturating_add(SESSION_LIFETIME_MS)
}

/// The claims format this worker writes.
pub(crate) fn claims_format() -> u8 {
    CLAIMS_FORMAT
}

/// The session id recorded in audit events and logs: the first 32 hex digits of the SHA-256 of the
/// token. Short, stable, computable by anyone who has the token, and revealing nothing sealed in it.
pub(crate) fn audit_id(token: &str) -> String {
    let mut id = hex::encode(Sha256::digest(token.as_bytes()));
    id.truncate(32);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8, created_at_ms: i64) -> SessionKeyMaterial {
        SessionKeyMaterial { id: id.into(), key: [byte; 32], created_at_ms }
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            format: CLAIMS_FORMAT,
            tenant: "acme".into(),
            virtual_server: "dev".into(),
            user_id: "u-alice".into(),
            token_id: "t-alice".into(),
            client_name: Some("client".into()),
            client_version: None,
            protocol_version: "2025-11-25".into(),
            capabilities: json!({ "sampling": {} }),
            upstreams: vec![SealedUpstream {
                server: "alpha".into(),
                url_tag: url_tag("http://alpha/mcp"),
                session_id: Some("alpha-session-1".into()),
                protocol_version: "2025-06-18".into(),
                offers: vec!["tools".into(), "resources".into()],
            }],
            issued_at_ms: 1_000,
        }
    }

    const NOW: i64 = 5_000;

    #[test]
    fn round_trip() {
        let keys = [key("k1", 7, 1)];
        let token = seal(&keys[0], &claims());
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        let (opened, key_id) = open(&keys, "acme", "dev", &token, NOW).unwrap();
        assert_eq!(opened, claims());
        assert_eq!(key_id, "k1");
        assert_eq!(opened.upstreams[0].capabilities(), json!({ "tools": {}, "resources": {} }));
        // A fresh nonce each time: two seals of the same claims differ.
        assert_ne!(seal(&keys[0], &claims()), token);
        assert!(token.len() < 600, "{} chars", token.len());
    }

    #[test]
    fn a_tampered_token_does_not_open() {
        let keys = [key("k1", 7, 1)];
        let token = seal(&keys[0], &claims());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for at in [bytes.len() - 1, bytes.len() / 2, 1 + 2 + 3] {
            bytes[at] ^= 1;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(open(&keys, "acme", "dev", &tampered, NOW).unwrap_err(), OpenError::Forged, "byte {at}");
            bytes[at] ^= 1;
        }
        let truncated = URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]);
        assert_eq!(open(&keys, "acme", "dev", &truncated, NOW).unwrap_err(), OpenError::Forged);
        for junk in ["", "0123456789abcdef", "not base64 !", "AA", &"A".repeat(MAX_TOKEN_CHARS + 4)] {
            assert_eq!(open(&keys, "acme", "dev", junk, NOW).unwrap_err(), OpenError::Malformed, "{junk:.20}");
        }
    }

    #[test]
    fn a_token_is_bound_to_its_tenant_and_virtual_server() {
        let keys = [key("k1", 7, 1)];
        let token = seal(&keys[0], &claims());
        assert_eq!(open(&keys, "acme", "prod", &token, NOW).unwrap_err(), OpenError::Forged);
        assert_eq!(open(&keys, "other", "dev", &token, NOW).unwrap_err(), OpenError::Forged);
        // The separator keeps ("acme", "dev") apart from ("acm", "edev") and the like.
        assert_eq!(open(&keys, "acm", "edev", &token, NOW).unwrap_err(), OpenError::Forged);
        // Another tenant's key with the same id does not open it either.
        assert_eq!(open(&[key("k1", 8, 1)], "acme", "dev", &token, NOW).unwrap_err(), OpenError::Forged);
    }

    #[test]
    fn a_session_expires_after_its_lifetime() {
        let keys = [key("k1", 7, 1)];
        let token = seal(&keys[0], &claims());
        let end = 1_000 + SESSION_LIFETIME_MS;
        assert!(open(&keys, "acme", "dev", &token, end - 1).is_ok());
        assert_eq!(open(&keys, "acme", "dev", &token, end).unwrap_err(), OpenError::Expired);
    }

    #[test]
    fn an_unknown_key_id_is_refused() {
        let token = seal(&key("k1", 7, 1), &claims());
        assert_eq!(open(&[key("k2", 7, 2)], "acme", "dev", &token, NOW).unwrap_err(), OpenError::UnknownKey);
        assert_eq!(open(&[], "acme", "dev", &token, NOW).unwrap_err(), OpenError::UnknownKey);
    }

    #[test]
    fn after_a_rotation_the_old_key_still_opens() {
        let old = key("k-old", 1, 1);
        let new = key("k-new", 2, 2);
        let before = seal(&old, &claims());
        // The bundle now lists both, newest first: the new key seals, both open.
        let keys = [new.clone(), old.clone()];
        let after = seal(&keys[0], &claims());
        assert_eq!(open(&keys, "acme", "dev", &before, NOW).unwrap().1, "k-old");
        assert_eq!(open(&keys, "acme", "dev", &after, NOW).unwrap().1, "k-new");
        // Once the old key leaves the bundle, its tokens no longer open.
        assert_eq!(open(&[new], "acme", "dev", &before, NOW).unwrap_err(), OpenError::UnknownKey);
    }

    #[test]
    fn audit_ids_are_short_and_stable() {
        assert_eq!(audit_id("abc").len(), 32);
        assert_eq!(audit_id("abc"), audit_id("abc"));
        assert_ne!(audit_id("abc"), audit_id("abd"));
    }
}
