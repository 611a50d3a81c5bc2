//! The one TLS provider of a Troupe binary. ractor_cluster's transport brings rustls with
//! aws-lc-rs; every other TLS user (the HTTP and LLM backends' client) takes the same
//! provider instead of compiling a second one, so it has to be installed before a client
//! is built.

use std::sync::Arc;

/// Makes aws-lc-rs the process's default rustls provider. Idempotent: a provider already
/// installed (by an earlier call) stays.
pub fn install_provider() {
    // Err means one is installed already, which is all this asks for.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The two sides of mutual TLS between nodes: what a node presents and checks when a peer
/// dials it, and when it dials a peer.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

/// Mutual TLS from PEM files: this node's certificate chain and key, and the CA that signs
/// every node's certificate. A peer must present a certificate the CA signed, both ways;
/// the cookie is still checked over the encrypted stream. aws-lc-rs, as everywhere.
pub fn cluster_tls(files: &crate::config::TlsFiles) -> Result<ClusterTls, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let at = |p: &std::path::Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| at(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| at(&files.key, &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca).map_err(|e| at(&files.ca, &e))? {
        roots
            .add(cert.map_err(|e| at(&files.ca, &e))?)
            .map_err(|e| at(&files.ca, &e))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate", files.ca.display()));
    }
    let roots = Arc::new(roots);
    // Without allow_unauthenticated: a peer with no certificate is refused.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| at(&files.ca, &e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| at(&files.cert, &e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| at(&files.cert, &e))?;
    Ok(ClusterTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_provider_is_installed_once_and_stays() {
        super::install_provider();
        super::install_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
