//! TLS for the Proxmox client: system roots, a CA file, a SHA-256 leaf-certificate pin, or an
//! explicit insecure mode. Builds a rustls `ClientConfig` with the ring provider. Knows nothing
//! about HyOps.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::PveError;

/// How the client checks the server certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// The operating system's trust store.
    SystemRoots,
    /// Trust only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Trust only a leaf certificate whose DER SHA-256 equals this value
    /// (hex, with or without `:` separators, case-insensitive — what `pvenode cert info` shows).
    Fingerprint(String),
    /// No verification at all. Only for labs; must be chosen explicitly.
    Insecure,
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::SystemRoots => f.write_str("SystemRoots"),
            TlsMode::CaFile(p) => write!(f, "CaFile({})", p.display()),
            TlsMode::Fingerprint(p) => write!(f, "Fingerprint({p})"),
            TlsMode::Insecure => f.write_str("Insecure"),
        }
    }
}

/// Parse a SHA-256 fingerprint (`AB:CD:…` or `abcd…`) into 32 bytes.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], PveError> {
    let hexstr: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes = hex::decode(&hexstr).map_err(|e| PveError::Config {
        field: "tls fingerprint",
        detail: format!("{s:?} is not hex: {e}"),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| PveError::Config {
        field: "tls fingerprint",
        detail: format!("{s:?} has {} bytes, a SHA-256 fingerprint has 32", b.len()),
    })
}

/// The SHA-256 fingerprint of a DER certificate, upper-case hex with `:` separators.
pub fn fingerprint_of(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug)]
struct PinVerifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if got == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "server certificate fingerprint {} does not match the pinned fingerprint",
                        fingerprint_of(end_entity.as_ref())
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_err(detail: impl Into<String>) -> PveError {
    PveError::Config {
        field: "tls",
        detail: detail.into(),
    }
}

/// Build the rustls client configuration for `mode` with the ring provider.
pub fn client_config(mode: &TlsMode) -> Result<ClientConfig, PveError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let config = match mode {
        TlsMode::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // individual unparsable system certificates are skipped, as browsers do
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_err("no usable certificates in the system trust store"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| PveError::Config {
                field: "tls ca file",
                detail: format!("{}: {e}", path.display()),
            })?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| PveError::Config {
                    field: "tls ca file",
                    detail: format!("{}: {e}", path.display()),
                })?;
                roots.add(cert).map_err(|e| PveError::Config {
                    field: "tls ca file",
                    detail: format!("{}: {e}", path.display()),
                })?;
            }
            if roots.is_empty() {
                return Err(PveError::Config {
                    field: "tls ca file",
                    detail: format!("{}: no PEM certificates found", path.display()),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::Fingerprint(fp) => {
            let pin = parse_fingerprint(fp)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin: Some(pin),
                    provider,
                }))
                .with_no_client_auth()
        }
        TlsMode::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}
