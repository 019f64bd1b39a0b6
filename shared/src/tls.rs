//! TLS set-up every process shares. reqwest is built with rustls but without a crypto provider of
//! its own (its default, aws-lc, needs a C toolchain), so a process installs ring before it
//! builds its first `reqwest::Client`; reqwest panics otherwise.

/// Makes ring the process's rustls crypto provider. Call before building any HTTP client;
/// calling it again (or after another part of the process installed one) is harmless.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
