//! The wire form of `POST /v1/bundles/{group}/delta`: only what changed, gzip-compressed
//! (`docs/decisions/0017-bundle-delta-and-compression.md`).
//!
//! The worker says what it holds ([`DeltaRequest`]); the control plane answers the group's complete
//! tenant list ([`DeltaAnswer::tenants`]) and a signed bundle only for the tenants whose newest
//! bundle differs from what the worker holds ([`DeltaAnswer::bundles`]). A bundle travels as its
//! canonical JSON text inside a JSON string ([`WireBundle::bundle`]), not as base64, so that the
//! gzip of the whole answer is about as small as the gzip of the raw bundle (base64 defeats most of
//! gzip's matching: the scale tenant's 2.22 MiB compress to 347 KiB as text, 431 KiB as base64).
//! The signature is over exactly those canonical bytes, as in [`SignedBundle`].

use std::io::Read as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::signing::{BundleError, SignedBundle};

/// One tenant's newest bundle, by sequence and revision: what a worker holds, and what the group
/// holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Tenant slug.
    pub tenant: String,
    /// The bundle's sequence.
    pub sequence: u64,
    /// The bundle's revision (hex SHA-256 of its content).
    pub revision: String,
}

/// The body a worker posts: the bundles it holds (its active ones), one per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRequest {
    /// What the worker holds; an empty list asks for everything.
    #[serde(default)]
    pub held: Vec<Held>,
}

/// The control plane's answer: the group's complete tenant list, and the bundles the worker lacks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeltaAnswer {
    /// Every tenant of the group with its newest bundle's sequence and revision, sorted by tenant.
    /// A tenant the worker holds that is not listed has left the group.
    pub tenants: Vec<Held>,
    /// Signed bundles for the listed tenants whose newest bundle is not the one the worker holds.
    pub bundles: Vec<WireBundle>,
}

/// A signed bundle with its canonical bytes as text (they are UTF-8 JSON), so they compress well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBundle {
    /// Id of the signing key.
    pub key_id: String,
    /// The canonical JSON bytes of the [`crate::Bundle`], as a string: exactly the signed bytes.
    pub bundle: String,
    /// Base64 of the Ed25519 signature over those bytes.
    pub signature: String,
}

impl WireBundle {
    /// The wire form of a stored envelope (same bytes, same signature).
    pub fn from_signed(signed: &SignedBundle) -> Result<Self, BundleError> {
        let bytes =
            B64.decode(&signed.payload).map_err(|e| BundleError::Malformed(format!("payload is not base64: {e}")))?;
        let bundle =
            String::from_utf8(bytes).map_err(|_| BundleError::Malformed("payload is not UTF-8 JSON".to_owned()))?;
        Ok(Self { key_id: signed.key_id.clone(), bundle, signature: signed.signature.clone() })
    }

    /// The envelope the worker verifies and keeps on disk (same bytes, same signature). Nothing is
    /// checked here: [`crate::KeyRing::verify`] does that on the result.
    pub fn into_signed(self) -> SignedBundle {
        SignedBundle { key_id: self.key_id, payload: B64.encode(self.bundle.as_bytes()), signature: self.signature }
    }
}

/// Gzip (level 6) of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::new(6));
    encoder.write_all(bytes).expect("writing to a Vec does not fail");
    encoder.finish().expect("writing to a Vec does not fail")
}

/// Why a compressed answer was not decompressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GunzipError {
    /// It decompresses to more than the limit (a zip bomb, or a set larger than configured).
    #[error("it decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Not gzip, or truncated.
    #[error("it is not valid gzip: {0}")]
    Corrupt(String),
}

/// Decompresses gzip `bytes`, refusing output over `limit` bytes without ever holding more than
/// `limit + 1` of it (so a small bomb cannot exhaust memory).
pub fn gunzip_bounded(bytes: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge { limit });
    }
    Ok(out)
}

/// The tenant an unverified canonical bundle text claims, read from its first bytes only (the
/// manifest comes first), for messages about a bundle too large to parse. Never used for decisions.
pub fn peek_tenant(bundle_text: &str) -> Option<String> {
    let head = bundle_text.get(..bundle_text.len().min(1024)).unwrap_or("");
    let start = head.find("\"tenant\":\"")? + "\"tenant\":\"".len();
    let end = head[start..].find('"')? + start;
    Some(head[start..end].chars().filter(|c| !c.is_control()).take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Content, KeyRing, SigningKey};

    fn signed(tenant: &str) -> (SigningKey, SignedBundle) {
        let key = SigningKey::generate();
        let mut c = Content { tenant: tenant.into(), ..Default::default() };
        c.normalize();
        let s = key.sign("default", 4, 0, c);
        (key, s)
    }

    #[test]
    fn the_wire_form_carries_the_signed_bytes_exactly() {
        let (key, s) = signed("acme");
        let wire = WireBundle::from_signed(&s).unwrap();
        assert!(wire.bundle.starts_with("{\"manifest\":"), "{}", wire.bundle);
        assert_eq!(peek_tenant(&wire.bundle).as_deref(), Some("acme"));
        // Through JSON (escaped as a string) and back: the same envelope, and it verifies.
        let answer = DeltaAnswer { tenants: vec![], bundles: vec![wire] };
        let text = serde_json::to_vec(&answer).unwrap();
        let back: DeltaAnswer = serde_json::from_slice(&gunzip_bounded(&gzip(&text), 1 << 20).unwrap()).unwrap();
        let again = back.bundles.into_iter().next().unwrap().into_signed();
        assert_eq!(again, s);
        let mut ring = KeyRing::default();
        ring.add_base64(&key.public_base64()).unwrap();
        assert_eq!(ring.verify(&again).unwrap().manifest.tenant, "acme");
        // One changed byte in the text no longer verifies.
        let mut tampered = WireBundle::from_signed(&s).unwrap();
        tampered.bundle = tampered.bundle.replacen("acme", "acmf", 2);
        assert_eq!(ring.verify(&tampered.into_signed()).unwrap_err(), BundleError::BadSignature);
    }

    #[test]
    fn decompression_is_bounded() {
        // 64 MiB of zeros compress to about 64 KiB: a bomb for a 1 MiB limit.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        assert_eq!(gunzip_bounded(&bomb, 1 << 20).unwrap_err(), GunzipError::TooLarge { limit: 1 << 20 });
        assert_eq!(gunzip_bounded(&gzip(b"hello"), 5).unwrap(), b"hello");
        assert_eq!(gunzip_bounded(&gzip(b"hello!"), 5).unwrap_err(), GunzipError::TooLarge { limit: 5 });
        assert!(matches!(gunzip_bounded(b"not gzip at all", 1 << 20), Err(GunzipError::Corrupt(_))));
        let truncated = gzip(&[7u8; 10_000]);
        assert!(matches!(gunzip_bounded(&truncated[..truncated.len() / 2], 1 << 20), Err(GunzipError::Corrupt(_))));
    }
}
