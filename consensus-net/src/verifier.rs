//! Certificate verifiers that accept only pinned validator keys.
//!
//! There is no certificate authority: a peer is accepted iff the ed25519 key its certificate
//! carries ([`crate::identity::validator_key`]) is one of the configured validators, and it
//! signed the TLS 1.3 handshake with that key. Names, dates and issuers are ignored, so a
//! certificate cannot expire and cannot be issued by anyone but the key holder. TLS 1.2 is
//! refused (QUIC requires 1.3 anyway), and only the ed25519 signature scheme is offered.

use std::collections::BTreeSet;
use std::sync::Arc;

use consensus::types::ValidatorId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::identity::validator_key;

fn check_pinned(
    cert: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    allowed: impl Fn(&ValidatorId) -> bool,
) -> Result<(), Error> {
    if !intermediates.is_empty() {
        return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
    }
    match validator_key(cert) {
        Some(key) if allowed(&key) => Ok(()),
        Some(_) => Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        )),
        None => Err(Error::InvalidCertificate(CertificateError::BadEncoding)),
    }
}

fn check_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Client side: the server must be the one validator this connection dials.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: ValidatorId,
    provider: Arc<CryptoProvider>,
}

impl PinnedServerVerifier {
    /// Accepts only a server whose certificate carries `expected`.
    pub fn new(expected: ValidatorId, provider: Arc<CryptoProvider>) -> PinnedServerVerifier {
        PinnedServerVerifier { expected, provider }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        check_pinned(end_entity, intermediates, |k| *k == self.expected)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        check_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side: the client must present a certificate carrying one of the pinned keys.
#[derive(Debug)]
pub struct PinnedClientVerifier {
    allowed: BTreeSet<ValidatorId>,
    provider: Arc<CryptoProvider>,
}

impl PinnedClientVerifier {
    /// Accepts only clients whose certificate carries one of `allowed`.
    pub fn new(
        allowed: impl IntoIterator<Item = ValidatorId>,
        provider: Arc<CryptoProvider>,
    ) -> PinnedClientVerifier {
        PinnedClientVerifier {
            allowed: allowed.into_iter().collect(),
            provider,
        }
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        check_pinned(end_entity, intermediates, |k| self.allowed.contains(k))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        check_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
