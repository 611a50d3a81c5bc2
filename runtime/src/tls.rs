//! The one TLS provider of a Troupe binary. ractor_cluster's transport brings rustls with
//! aws-lc-rs; every other TLS user (the HTTP and LLM backends' client) takes the same
//! provider instead of compiling a second one, so it has to be installed before a client
//! is built.

/// Makes aws-lc-rs the process's default rustls provider. Idempotent: a provider already
/// installed (by an earlier call) stays.
pub fn install_provider() {
    // Err means one is installed already, which is all this asks for.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
