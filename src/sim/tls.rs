//! The simulator's self-signed TLS certificate (rcgen) and the rustls server config, plus the
//! SHA-256 fingerprint a client pins. Knows nothing about the API.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A generated certificate.
pub struct SimCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the self-signed certificate failed: {0}")]
    Generate(String),
    #[error("building the TLS server config failed: {0}")]
    Config(String),
}

impl SimCert {
    /// A self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Result<Self, TlsError> {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert_pem: ck.cert.pem(),
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.signing_key.serialize_der(),
        })
    }

    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    /// The same fingerprint in PVE's colon form (`AB:CD:…`, uppercase).
    pub fn fingerprint_colon(&self) -> String {
        colon_form(&self.fingerprint_hex())
    }

    /// A rustls server config serving this certificate (HTTP/1.1 and h2 via ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// `abcd…` → `AB:CD:…`.
pub fn colon_form(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms_agree() {
        let c = SimCert::generate().unwrap();
        assert_eq!(c.fingerprint_hex().len(), 64);
        assert_eq!(c.fingerprint_colon().len(), 95);
        assert_eq!(
            c.fingerprint_colon().replace(':', "").to_lowercase(),
            c.fingerprint_hex()
        );
        assert!(c.server_config().is_ok());
    }
}
