//! Ed25519 signing of bundles, and the checks a worker makes before it activates one.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::format::{Bundle, Content, Manifest, SCHEMA_VERSION};

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// The envelope or payload is not well formed.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// Signed by a key this worker does not trust.
    #[error("bundle signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bundle signature does not verify")]
    BadSignature,
    /// The manifest's revision is not the hash of the content.
    #[error("bundle revision {claimed} does not match its content ({actual})")]
    RevisionMismatch {
        /// What the manifest says.
        claimed: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A schema this worker does not understand.
    #[error("bundle schema {0} is not supported (this worker knows {SCHEMA_VERSION})")]
    UnsupportedSchema(u32),
    /// Older than what the worker holds: refused to prevent rollback.
    #[error("bundle sequence {offered} is older than the active {active}")]
    Older {
        /// Sequence offered.
        offered: u64,
        /// Sequence active.
        active: u64,
    },
}

/// The wire form of a bundle: the canonical bytes of a [`Bundle`] and a signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBundle {
    /// Id of the signing key.
    pub key_id: String,
    /// Base64 of the bundle's canonical JSON bytes.
    pub payload: String,
    /// Base64 of the Ed25519 signature over the payload bytes.
    pub signature: String,
}

/// The platform's signing key.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Key id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id_of(public: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(Sha256::digest(public.as_bytes()))[..16].to_owned()
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(key)
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let key_id = key_id_of(&key.verifying_key());
        Self { key, key_id }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_dalek)
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM key: {e}"))
    }

    /// Writes the key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key.to_pkcs8_pem(Default::default()).expect("ed25519 keys always encode").to_string()
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half, base64 (what workers are given to trust).
    pub fn public_base64(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// Builds, hashes and signs a bundle for `content` (which must be normalized).
    pub fn sign(&self, group: &str, sequence: u64, compiled_at_ms: i64, content: Content) -> SignedBundle {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            tenant: content.tenant.clone(),
            group: group.to_owned(),
            revision: content.revision(),
            sequence,
            compiled_at_ms,
            key_id: self.key_id.clone(),
        };
        let bytes = serde_json::to_vec(&Bundle { manifest, content }).expect("bundle always serialises");
        let signature = self.key.sign(&bytes);
        SignedBundle {
            key_id: self.key_id.clone(),
            payload: B64.encode(&bytes),
            signature: B64.encode(signature.to_bytes()),
        }
    }
}

/// The public keys a worker trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, ed25519_dalek::VerifyingKey>,
}

impl KeyRing {
    /// Adds a public key given as base64 of its 32 bytes.
    pub fn add_base64(&mut self, public: &str) -> Result<String, String> {
        let bytes = B64.decode(public.trim()).map_err(|e| format!("trusted key is not base64: {e}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| "trusted key must be 32 bytes".to_owned())?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))?;
        let id = key_id_of(&key);
        self.keys.insert(id.clone(), key);
        Ok(id)
    }

    /// Verifies the envelope and returns the bundle, checking the signature, key, schema and that
    /// the revision is the hash of the content. Ordering against the active bundle is the caller's
    /// job ([`check_sequence`]).
    pub fn verify(&self, signed: &SignedBundle) -> Result<Bundle, BundleError> {
        let key = self.keys.get(&signed.key_id).ok_or_else(|| BundleError::UnknownKey(signed.key_id.clone()))?;
        let bytes =
            B64.decode(&signed.payload).map_err(|e| BundleError::Malformed(format!("payload is not base64: {e}")))?;
        let sig = B64
            .decode(&signed.signature)
            .map_err(|e| BundleError::Malformed(format!("signature is not base64: {e}")))?;
        let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|_| BundleError::BadSignature)?;
        key.verify(&bytes, &sig).map_err(|_| BundleError::BadSignature)?;
        let bundle: Bundle = serde_json::from_slice(&bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if bundle.manifest.schema_version != SCHEMA_VERSION {
            return Err(BundleError::UnsupportedSchema(bundle.manifest.schema_version));
        }
        if bundle.manifest.key_id != signed.key_id {
            return Err(BundleError::Malformed("manifest key id differs from the envelope's".into()));
        }
        let actual = bundle.content.revision();
        if actual != bundle.manifest.revision {
            return Err(BundleError::RevisionMismatch { claimed: bundle.manifest.revision, actual });
        }
        Ok(bundle)
    }
}

/// Refuses a bundle older than the active one (rollback protection).
pub fn check_sequence(offered: &Manifest, active: Option<&Manifest>) -> Result<(), BundleError> {
    match active {
        Some(active) if offered.sequence < active.sequence => {
            Err(BundleError::Older { offered: offered.sequence, active: active.sequence })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        let mut c = Content { tenant: "acme".into(), ..Default::default() };
        c.normalize();
        c
    }

    fn ring(key: &SigningKey) -> KeyRing {
        let mut ring = KeyRing::default();
        ring.add_base64(&key.public_base64()).unwrap();
        ring
    }

    #[test]
    fn signed_bundle_verifies_and_round_trips() {
        let key = SigningKey::generate();
        let signed = key.sign("default", 3, 1_700_000_000_000, content());
        let bundle = ring(&key).verify(&signed).unwrap();
        assert_eq!(bundle.manifest.sequence, 3);
        assert_eq!(bundle.manifest.revision, content().revision());
        assert_eq!(bundle.content, content());
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = SigningKey::generate();
        let mut signed = key.sign("default", 1, 0, content());
        let mut bytes = B64.decode(&signed.payload).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap().replace("\"acme\"", "\"evil\"");
        bytes = text.into_bytes();
        signed.payload = B64.encode(bytes);
        assert_eq!(ring(&key).verify(&signed), Err(BundleError::BadSignature));
    }

    #[test]
    fn unknown_key_is_refused() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let signed = other.sign("default", 1, 0, content());
        assert!(matches!(ring(&key).verify(&signed), Err(BundleError::UnknownKey(_))));
    }

    #[test]
    fn signature_from_another_key_under_a_trusted_id_is_refused() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let mut signed = other.sign("default", 1, 0, content());
        signed.key_id = key.key_id().to_owned();
        assert_eq!(ring(&key).verify(&signed), Err(BundleError::BadSignature));
    }

    #[test]
    fn older_sequence_is_refused() {
        let key = SigningKey::generate();
        let r = ring(&key);
        let new = r.verify(&key.sign("default", 5, 0, content())).unwrap();
        let old = r.verify(&key.sign("default", 4, 0, content())).unwrap();
        assert_eq!(
            check_sequence(&old.manifest, Some(&new.manifest)),
            Err(BundleError::Older { offered: 4, active: 5 })
        );
        assert!(check_sequence(&new.manifest, Some(&old.manifest)).is_ok());
    }

    #[test]
    fn pem_round_trip_keeps_the_key_id() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.key_id(), again.key_id());
        assert!(SigningKey::from_pem("not a key").is_err());
    }
}
