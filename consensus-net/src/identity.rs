//! Validator identities on the wire: the TLS certificate *is* the validator key.
//!
//! Each validator's certificate is self-signed (rcgen) with its ed25519 validator key, so the
//! certificate's subject public key is the validator's id. A peer proves it holds that key by
//! signing the TLS 1.3 handshake (`CertificateVerify`); the verifiers in
//! [`crate::verifier`] then accept the connection only if that key is on the pinned list.
//! Nothing else in the certificate (names, dates, issuer) is trusted or checked.

use std::sync::Arc;

use consensus::types::ValidatorId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// DER prefix of a PKCS#8 v1 ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The name put in every certificate (and sent as SNI); never checked.
pub const SERVER_NAME: &str = "nexus-validator";

/// Why a TLS identity could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen refused the key or the certificate parameters.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the key or certificate.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// A validator's TLS identity: a self-signed certificate over its ed25519 key.
#[derive(Debug)]
pub struct Identity {
    /// The validator id (ed25519 public key) the certificate carries.
    pub id: ValidatorId,
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    pkcs8: Vec<u8>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            id: self.id,
            cert: self.cert.clone(),
            pkcs8: self.pkcs8.clone(),
        }
    }
}

impl Identity {
    /// The identity of the validator whose ed25519 secret seed is `seed` (the same seed as
    /// [`consensus::types::Keypair::from_seed`]).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Identity, IdentityError> {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(seed);
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_ED25519,
        )?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        let cert = params.self_signed(&key)?;
        let id = ValidatorId(
            ed25519_dalek::SigningKey::from_bytes(seed)
                .verifying_key()
                .to_bytes(),
        );
        let cert = cert.der().clone();
        assert_eq!(
            validator_key(&cert),
            Some(id),
            "certificate carries the validator key"
        );
        Ok(Identity { id, cert, pkcs8 })
    }

    /// The private key for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }

    /// A rustls signing key (for building configurations by hand).
    pub fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, IdentityError> {
        Ok(rustls::crypto::ring::sign::any_eddsa_type(
            &PrivatePkcs8KeyDer::from(self.pkcs8.clone()),
        )?)
    }
}

/// The ed25519 key a certificate carries as its subject public key, if it is an ed25519 key.
/// The certificate is parsed as X.509 (webpki); the key is the one the peer's handshake
/// signature is checked against.
pub fn validator_key(cert: &CertificateDer<'_>) -> Option<ValidatorId> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let spki = spki.as_ref();
    if spki.len() != SPKI_ED25519_PREFIX.len() + 32 || spki[..12] != SPKI_ED25519_PREFIX {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&spki[12..]);
    Some(ValidatorId(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_validator_key() {
        let seed = [7u8; 32];
        let identity = Identity::from_seed(&seed).expect("identity");
        let keypair = consensus::types::Keypair::from_seed(seed);
        assert_eq!(identity.id, keypair.id());
        assert_eq!(validator_key(&identity.cert), Some(keypair.id()));
        identity.signing_key().expect("rustls accepts the key");
        assert_eq!(validator_key(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
