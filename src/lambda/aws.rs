//! The AWS side of function discovery: one Lambda client per sweep key (credentials, role,
//! region), a client-side rate limit per client, every call counted by operation and result,
//! and errors sorted into what an operator can act on. The endpoint and the default
//! credentials come from the SDK's usual environment (`AWS_ENDPOINT_URL`, web identity, …).

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_config::meta::region::ProvideRegion;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_lambda::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::types::FunctionVersion as VersionFilter;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::OnceCell;

use super::functions::{FunctionAliases, FunctionVersion, Listing, LATEST};
use super::problem::SweepError;
use super::target::{CredentialSource, SweepKey};
use crate::metrics::{ApiResult, Metrics};

/// Attempts per call, the first included: the SDK's standard retry (exponential backoff with
/// jitter) absorbs a brief throttling; beyond that the sweep fails and is retried later.
const MAX_ATTEMPTS: u32 = 3;
const SESSION_NAME: &str = "upstream-discovery";
/// Overrides the session name, as for the SDK's own web identity provider.
const SESSION_NAME_VARIABLE: &str = "AWS_ROLE_SESSION_NAME";

/// Error codes AWS uses for "slow down".
const THROTTLING_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottledException",
];

/// Error codes that mean the credentials were refused (wrong, expired or without rights).
const REFUSED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "AccessDeniedException",
    "AccessDenied",
    "ExpiredTokenException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
];

impl SweepError {
    pub(super) fn from_sdk<E, R>(operation: &'static str, error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: std::fmt::Debug + 'static,
    {
        if let SdkError::ServiceError(service) = error {
            let code = service.err().code().unwrap_or("Unknown").to_string();
            let message = service.err().message().unwrap_or_default().to_string();
            if THROTTLING_CODES.contains(&code.as_str()) {
                return SweepError::Throttled { operation, code };
            }
            if REFUSED_CODES.contains(&code.as_str()) {
                return SweepError::CredentialsRefused {
                    operation,
                    code,
                    message,
                };
            }
            return SweepError::Api {
                operation,
                message: format!("{code}: {message}"),
            };
        }
        // Credentials are resolved before the request is sent, so their failure arrives as a
        // dispatch or construction failure with the provider's error somewhere in the chain.
        let mut source: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(credentials) = current.downcast_ref::<CredentialsError>() {
                return SweepError::from_credentials(operation, credentials);
            }
            source = current.source();
        }
        SweepError::Api {
            operation,
            message: aws_sdk_lambda::error::DisplayErrorContext(error).to_string(),
        }
    }

    fn from_credentials(operation: &'static str, error: &CredentialsError) -> Self {
        let message = aws_sdk_lambda::error::DisplayErrorContext(error).to_string();
        match error {
            CredentialsError::CredentialsNotLoaded(_) => SweepError::NoCredentials(message),
            _ if THROTTLING_CODES.iter().any(|code| message.contains(code)) => {
                SweepError::Throttled {
                    operation: "AssumeRole",
                    code: "Throttling".into(),
                }
            }
            _ => SweepError::CredentialsRefused {
                operation,
                code: "CredentialsError".into(),
                message,
            },
        }
    }
}

/// One account and region: a client and its rate limit.
#[derive(Clone)]
pub struct Sweeper {
    client: aws_sdk_lambda::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl Sweeper {
    /// Lists every version of every function, and, with `aliases`, the aliases of functions
    /// that are new or changed since `previous`.
    pub async fn sweep(
        &self,
        previous: Option<&Listing>,
        aliases: bool,
    ) -> Result<Listing, SweepError> {
        let mut listing = Listing {
            versions: self.list_versions().await?,
            aliases: BTreeMap::new(),
        };
        if aliases {
            for name in listing.needing_aliases(previous) {
                let last_modified = listing
                    .versions
                    .iter()
                    .find(|v| v.name == name && v.version == LATEST)
                    .map(|v| v.last_modified.clone())
                    .unwrap_or_default();
                let names = self.list_aliases(&name).await?;
                listing.aliases.insert(
                    name,
                    FunctionAliases {
                        last_modified,
                        names,
                    },
                );
            }
            listing.keep_aliases_from(previous);
        }
        Ok(listing)
    }

    async fn list_versions(&self) -> Result<Vec<FunctionVersion>, SweepError> {
        let mut pages = self
            .client
            .list_functions()
            .function_version(VersionFilter::All)
            .into_paginator()
            .send();
        let mut versions = Vec::new();
        loop {
            // The paginator sends the next request when polled, so waiting here spaces them.
            self.limiter.until_ready().await;
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| SweepError::from_sdk("ListFunctions", &e))?;
            versions.extend(page.functions().iter().filter_map(|f| {
                Some(FunctionVersion {
                    name: f.function_name()?.to_string(),
                    version: f.version().unwrap_or(LATEST).to_string(),
                    last_modified: f.last_modified().unwrap_or_default().to_string(),
                })
            }));
        }
        Ok(versions)
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<String>, SweepError> {
        let mut pages = self
            .client
            .list_aliases()
            .function_name(function)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        loop {
            self.limiter.until_ready().await;
            let Some(page) = pages.next().await else {
                break;
            };
            match page {
                Ok(page) => names.extend(
                    page.aliases()
                        .iter()
                        .filter_map(|a| a.name().map(str::to_string)),
                ),
                // Deleted since ListFunctions saw it: no aliases, and no error.
                Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(SweepError::from_sdk("ListAliases", &e)),
            }
        }
        Ok(names)
    }
}

type Limiter = Arc<DefaultDirectRateLimiter>;

/// Builds and keeps one [`Sweeper`] per sweep key, and one rate limiter per account and region
/// shared by every sweep that calls that account (two Secrets may hold keys of one account);
/// clones share both.
#[derive(Clone)]
pub struct Sweepers {
    metrics: Metrics,
    api_rps: NonZeroU32,
    base: Arc<OnceCell<SdkConfig>>,
    built: Arc<Mutex<HashMap<SweepKey, Sweeper>>>,
    limiters: Arc<Mutex<HashMap<(String, String), Limiter>>>,
}

impl Sweepers {
    pub fn new(metrics: Metrics, api_rps: NonZeroU32) -> Self {
        Self {
            metrics,
            api_rps,
            base: Arc::new(OnceCell::new()),
            built: Arc::new(Mutex::new(HashMap::new())),
            limiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The limiter of `account` (or of a sweep whose account is unknown) in `region`.
    fn limiter(&self, account: &str, region: &str) -> Limiter {
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        limiters
            .entry((account.to_string(), region.to_string()))
            .or_insert_with(|| {
                Arc::new(RateLimiter::direct(
                    Quota::per_second(self.api_rps).allow_burst(NonZeroU32::MIN),
                ))
            })
            .clone()
    }

    fn built(&self) -> MutexGuard<'_, HashMap<SweepKey, Sweeper>> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the clients of keys no longer in use (a rotated Secret is a new key). Limiters
    /// stay: an account keeps its pace whichever keys call it.
    pub fn retain(&self, keep: impl Fn(&SweepKey) -> bool) {
        self.built().retain(|key, _| keep(key));
    }

    /// The sweeper of `key`, built on first use.
    pub async fn get(&self, key: &SweepKey) -> Sweeper {
        if let Some(sweeper) = self.built().get(key) {
            return sweeper.clone();
        }
        let base = self.base.get_or_init(load_base_config).await.clone();
        let credentials = credentials_provider(key, &self.metrics);
        let account = match account_of(&base, key, credentials.clone(), &self.metrics).await {
            Some(account) => account,
            // Unknown (the credentials may be refused): paced on its own.
            None => format!("unknown-{:x}", key.fingerprint()),
        };
        tracing::debug!(sweep = %key.describe(), %account, "AWS account of a sweep");
        let sweeper = Sweeper {
            client: lambda_client(&base, key, credentials, &self.metrics),
            limiter: self.limiter(&account, &key.region),
        };
        self.built().insert(key.clone(), sweeper.clone());
        sweeper
    }
}

/// The SDK's own region chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile, then the
/// instance metadata service), for Upstreams without `spec.aws.region`; asked once, on the
/// first such Upstream, since the metadata service may take seconds to answer "none".
pub async fn default_region() -> Option<String> {
    aws_config::default_provider::region::default_provider()
        .region()
        .await
        .map(|region| region.as_ref().to_string())
        .filter(|region| !region.is_empty())
}

/// The SDK's environment, loaded once, on the first aws Upstream. The region is only a
/// default for the default chain's own STS calls; each client sets its sweep's. Set here so
/// that loading never waits on the instance metadata service.
async fn load_base_config() -> SdkConfig {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_string());
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .load()
        .await
}

/// The credentials of a sweep: the Secret's keys, the pod's web identity token exchanged for
/// the sweep's role, or the default chain (`None`: the base config's).
fn credentials_provider(key: &SweepKey, metrics: &Metrics) -> Option<SharedCredentialsProvider> {
    match &key.credentials {
        CredentialSource::DefaultChain => None,
        CredentialSource::Static(keys) => Some(SharedCredentialsProvider::new(Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            keys.session_token.clone(),
            None,
            "kubernetes-secret",
        ))),
        CredentialSource::WebIdentity {
            token_file,
            role_arn,
        } => {
            let session_name = std::env::var(SESSION_NAME_VARIABLE)
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| SESSION_NAME.to_string());
            // The STS endpoint comes from the environment (`AWS_ENDPOINT_URL_STS`) as usual.
            let config =
                ProviderConfig::default().with_region(Some(Region::new(key.region.clone())));
            let provider = WebIdentityTokenCredentialsProvider::builder()
                .static_configuration(StaticConfiguration {
                    web_identity_token_file: token_file.clone(),
                    role_arn: role_arn.clone(),
                    session_name,
                })
                .configure(&config)
                .build();
            Some(SharedCredentialsProvider::new(CountedProvider {
                inner: SharedCredentialsProvider::new(provider),
                operation: "AssumeRoleWithWebIdentity",
                metrics: metrics.clone(),
            }))
        }
    }
}

fn lambda_client(
    base: &SdkConfig,
    key: &SweepKey,
    credentials: Option<SharedCredentialsProvider>,
    metrics: &Metrics,
) -> aws_sdk_lambda::Client {
    let mut config = aws_sdk_lambda::config::Builder::from(base)
        .region(Region::new(key.region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .interceptor(CallCounter {
            metrics: metrics.clone(),
        });
    if let Some(credentials) = credentials {
        config = config.credentials_provider(credentials);
    }
    aws_sdk_lambda::Client::from_conf(config.build())
}

/// The account a sweep's calls count against: from the role's ARN, else asked once of STS
/// (GetCallerIdentity); `None` when STS cannot say.
async fn account_of(
    base: &SdkConfig,
    key: &SweepKey,
    credentials: Option<SharedCredentialsProvider>,
    metrics: &Metrics,
) -> Option<String> {
    if let Some(account) = key.role_arn().and_then(account_in_arn) {
        return Some(account.to_string());
    }
    let mut config = aws_sdk_sts::config::Builder::from(base)
        .region(Region::new(key.region.clone()))
        .interceptor(CallCounter {
            metrics: metrics.clone(),
        });
    if let Some(credentials) = credentials {
        config = config.credentials_provider(credentials);
    }
    let client = aws_sdk_sts::Client::from_conf(config.build());
    match client.get_caller_identity().send().await {
        Ok(identity) => identity.account().map(str::to_string),
        Err(error) => {
            let error = aws_sdk_sts::error::DisplayErrorContext(error);
            tracing::debug!(sweep = %key.describe(), %error, "cannot tell the AWS account");
            None
        }
    }
}

/// The account of an ARN (`arn:aws:iam::123456789012:role/name`).
pub fn account_in_arn(arn: &str) -> Option<&str> {
    arn.split(':')
        .nth(4)
        .filter(|account| !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit()))
}

/// Counts every attempt (retries included) in `lambda_api_calls_total`.
#[derive(Debug)]
struct CallCounter {
    metrics: Metrics,
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = match cfg.load::<Metadata>().map(Metadata::name) {
            Some("ListFunctions") => "ListFunctions",
            Some("ListAliases") => "ListAliases",
            Some("ListVersionsByFunction") => "ListVersionsByFunction",
            Some("GetCallerIdentity") => "GetCallerIdentity",
            _ => "Other",
        };
        let result = match context.response() {
            Some(response) if response.status().is_success() => ApiResult::Success,
            Some(response) => {
                let code = response
                    .headers()
                    .get("x-amzn-errortype")
                    .unwrap_or_default();
                if response.status().as_u16() == 429
                    || THROTTLING_CODES.iter().any(|c| code.starts_with(c))
                {
                    ApiResult::Throttled
                } else {
                    ApiResult::Error
                }
            }
            None => ApiResult::Error,
        };
        self.metrics.lambda_api_call(operation, result);
        Ok(())
    }
}

/// Counts the STS calls of a credentials provider; the client's identity cache calls it only
/// when the credentials near expiry.
#[derive(Debug)]
struct CountedProvider {
    inner: SharedCredentialsProvider,
    operation: &'static str,
    metrics: Metrics,
}

impl ProvideCredentials for CountedProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let result = self.inner.provide_credentials().await;
            let outcome = match &result {
                Ok(_) => ApiResult::Success,
                Err(error) => {
                    let text = aws_sdk_lambda::error::DisplayErrorContext(error).to_string();
                    if THROTTLING_CODES.iter().any(|code| text.contains(code)) {
                        ApiResult::Throttled
                    } else {
                        ApiResult::Error
                    }
                }
            };
            self.metrics.lambda_api_call(self.operation, outcome);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_read_from_a_role_arn() {
        assert_eq!(
            account_in_arn("arn:aws:iam::123456789012:role/reader"),
            Some("123456789012")
        );
        assert_eq!(
            account_in_arn("arn:aws-cn:iam::210987654321:role/a/b"),
            Some("210987654321")
        );
        assert_eq!(account_in_arn("arn:aws:iam:::role/x"), None);
        assert_eq!(account_in_arn("reader"), None);
    }

    #[test]
    fn sweeps_of_one_account_and_region_share_a_limiter() {
        let sweepers = Sweepers::new(Metrics::new().expect("metrics"), NonZeroU32::MIN);
        let a = sweepers.limiter("123456789012", "eu-west-1");
        let b = sweepers.limiter("123456789012", "eu-west-1");
        let other_region = sweepers.limiter("123456789012", "us-east-1");
        let other_account = sweepers.limiter("210987654321", "eu-west-1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other_region));
        assert!(!Arc::ptr_eq(&a, &other_account));
    }
    use aws_sdk_lambda::config::http::HttpResponse;
    use aws_sdk_lambda::error::ErrorMetadata;
    use aws_sdk_lambda::operation::list_functions::ListFunctionsError;
    use aws_sdk_lambda::primitives::SdkBody;
    use aws_smithy_runtime_api::http::StatusCode;

    fn service_error(status: u16, code: &str) -> SdkError<ListFunctionsError, HttpResponse> {
        let error = ListFunctionsError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("the message")
                .build(),
        );
        let status = StatusCode::try_from(status).expect("status");
        SdkError::service_error(error, HttpResponse::new(status, SdkBody::empty()))
    }

    #[test]
    fn aws_errors_are_sorted_into_what_an_operator_can_act_on() {
        let classify =
            |status, code| SweepError::from_sdk("ListFunctions", &service_error(status, code));
        assert_eq!(
            classify(429, "TooManyRequestsException").kind().as_str(),
            "lambda_throttled"
        );
        assert_eq!(
            classify(400, "ThrottlingException").kind().as_str(),
            "lambda_throttled"
        );
        assert_eq!(
            classify(403, "UnrecognizedClientException").kind().as_str(),
            "lambda_credentials_refused"
        );
        assert_eq!(
            classify(403, "AccessDeniedException").reason().as_str(),
            "LambdaCredentialsRefused"
        );
        let other = classify(500, "ServiceException");
        assert_eq!(other.kind().as_str(), "lambda_api_error");
        assert_eq!(other.reason().as_str(), "LambdaDiscoveryFailed");
        assert!(other.to_string().contains("ServiceException: the message"));
    }

    #[test]
    fn a_credentials_provider_failure_is_found_in_the_error_chain() {
        let missing: SdkError<ListFunctionsError, HttpResponse> = SdkError::construction_failure(
            CredentialsError::not_loaded("no providers in chain provided credentials"),
        );
        assert_eq!(
            SweepError::from_sdk("ListFunctions", &missing)
                .kind()
                .as_str(),
            "lambda_no_credentials"
        );
        let refused: SdkError<ListFunctionsError, HttpResponse> = SdkError::construction_failure(
            CredentialsError::provider_error("AccessDenied: not authorized to assume the role"),
        );
        assert_eq!(
            SweepError::from_sdk("ListFunctions", &refused)
                .kind()
                .as_str(),
            "lambda_credentials_refused"
        );
        let throttled: SdkError<ListFunctionsError, HttpResponse> = SdkError::construction_failure(
            CredentialsError::provider_error("Throttling: Rate exceeded"),
        );
        assert_eq!(
            SweepError::from_sdk("ListFunctions", &throttled)
                .kind()
                .as_str(),
            "lambda_throttled"
        );
    }
}
