//! Shared AWS SDK configuration: region, endpoint override (moto, LocalStack, VPC endpoints).

#[cfg(feature = "aws")]
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// How to reach AWS. Empty fields fall back to the SDK's own chain (environment, profile,
/// instance/task role).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct AwsSettings {
    pub region: Option<String>,
    /// e.g. `http://127.0.0.1:5000` for a moto server.
    pub endpoint_url: Option<String>,
}

#[cfg(feature = "aws")]
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    // The one HTTP client of every AWS call (S3, SQS, ECS, STS and the credential providers):
    // hyper 1 + rustls with the *ring* provider and the system's root certificates (the SDK's own
    // default would build aws-lc, a large C library; see the workspace Cargo.toml).
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The full error chain of an SDK error, which its `Display` hides.
#[cfg(feature = "aws")]
pub(crate) fn describe<E: std::error::Error>(e: &E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}
