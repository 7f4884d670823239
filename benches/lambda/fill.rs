//! Filling moto (accounts, their roles and keys, functions and versions) and the cluster
//! (Secrets and aws Upstreams) for the bench. None of it is measured.
//!
//! Accounts: moto tells accounts apart by access key, so each account gets an IAM user and a
//! key created in it (moto's `x-moto-account-id` header, only on these IAM calls); the daemon
//! and the bench then sign with that key and moto files the calls under its account, as AWS
//! would.
//!
//! Functions: account-region `k` has `F` functions `fn-gGGGG-IIIII`, in groups of
//! `i % groups(k)`; each has `V` versions, `$LATEST` included (created, then `V - 1` times
//! PublishVersion, with new code between two publishes since moto publishes nothing new
//! otherwise), so a sweep lists `F × V` entries. Upstream `g` of account-region `k` has the
//! filter annotation `^fn-gGGGG-`: a team's slice of the account, as aws Upstreams are used.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use futures::{stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use upstream_discovery::crd::Upstream;

use crate::aws_fixture::function_zip;

/// Calls to moto in flight while filling it (moto serves them on threads under one GIL).
const MOTO_CONCURRENCY: usize = 24;
/// Requests to the API server in flight while creating Upstreams.
const KUBE_CONCURRENCY: usize = 32;
const ROLE: &str = "bench-lambda";
const FILTER_ANNOTATION: &str = "upstream-discovery.io/lambda-function-filter";
const REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "us-west-2",
    "eu-central-1",
    "sa-east-1",
    "ap-northeast-1",
    "ca-central-1",
];

/// The sizes of a run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub functions: usize,
    pub versions: usize,
    pub accounts: usize,
    pub regions: usize,
    pub upstreams: usize,
}

impl Sizes {
    pub fn account_regions(&self) -> usize {
        self.accounts * self.regions
    }

    /// Upstreams on account-region `k` (Upstream `u` is on `u % account_regions`).
    pub fn groups(&self, k: usize) -> usize {
        let ars = self.account_regions();
        self.upstreams / ars + usize::from(k < self.upstreams % ars)
    }

    /// Entries of one sweep of an account-region: every version, `$LATEST` included.
    pub fn entries_per_sweep(&self) -> usize {
        self.functions * self.versions
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.functions == 0 || self.versions == 0 || self.accounts == 0 || self.regions == 0 {
            return Err(
                "--functions, --versions, --accounts and --regions must be positive".into(),
            );
        }
        if self.regions > REGIONS.len() {
            return Err(format!("at most {} regions", REGIONS.len()));
        }
        if self.upstreams < self.account_regions()
            || self.upstreams > self.functions * self.account_regions()
        {
            return Err("--upstreams must be at least accounts × regions (one per account-region) and at most functions × accounts × regions".into());
        }
        Ok(())
    }
}

/// One account's identity in moto.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One account in one region: where a sweep goes.
#[derive(Debug, Clone)]
pub struct AccountRegion {
    pub index: usize,
    pub account: usize,
    pub region: String,
    pub client: aws_sdk_lambda::Client,
}

/// An aws Upstream of the bench and what it should hold.
#[derive(Debug, Clone)]
pub struct BenchUpstream {
    pub name: String,
    pub account_region: usize,
    pub group: usize,
    /// The `logicalName`s the daemon should write, sorted.
    pub expected: BTreeSet<String>,
}

pub fn function_name(group: usize, index: usize) -> String {
    format!("fn-g{group:04}-{index:05}")
}

fn logical_name(name: &str, version: usize) -> String {
    if version == 0 {
        name.to_string()
    } else {
        format!("{name}:{version}")
    }
}

pub struct Moto {
    url: String,
    http: HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    serial: AtomicU64,
}

impl Moto {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            serial: AtomicU64::new(1),
        }
    }

    /// An IAM query call in `account` (moto's account header); the answer's text.
    async fn iam(&self, account: &str, body: String) -> Result<String, String> {
        let request = hyper::Request::post(format!("{}/", self.url))
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .header("x-moto-account-id", account)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("IAM request: {e}"))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| format!("moto does not answer IAM: {e}"))?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| format!("IAM answer: {e}"))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("IAM in account {account}: {status} {text}"))
        }
    }

    /// Account `index`: its Lambda role, a user and an access key.
    pub async fn account(&self, index: usize) -> Result<Account, String> {
        let id = format!("{}", 210_000_000_000u64 + index as u64);
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22lambda.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
        self.iam(
            &id,
            format!("Action=CreateRole&Version=2010-05-08&RoleName={ROLE}&AssumeRolePolicyDocument={policy}"),
        )
        .await?;
        self.iam(
            &id,
            "Action=CreateUser&Version=2010-05-08&UserName=bench".into(),
        )
        .await?;
        let text = self
            .iam(
                &id,
                "Action=CreateAccessKey&Version=2010-05-08&UserName=bench".into(),
            )
            .await?;
        let field = |tag: &str| {
            text.split_once(&format!("<{tag}>"))
                .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
                .map(|(value, _)| value.trim().to_string())
                .ok_or_else(|| format!("no {tag} in CreateAccessKey's answer: {text}"))
        };
        Ok(Account {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            id,
        })
    }

    pub fn client(&self, account: &Account, region: &str) -> aws_sdk_lambda::Client {
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new(
                &account.access_key_id,
                &account.secret_access_key,
                None,
                None,
                "bench",
            ))
            .endpoint_url(&self.url)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .build();
        aws_sdk_lambda::Client::from_conf(config)
    }

    fn next_zip(&self) -> Blob {
        Blob::new(function_zip(self.serial.fetch_add(1, Ordering::Relaxed)))
    }

    /// Creates `name` and publishes `published` versions of it.
    async fn function(
        &self,
        client: &aws_sdk_lambda::Client,
        account: &Account,
        name: &str,
        published: usize,
    ) -> Result<(), String> {
        client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Python312)
            .handler("index.handler")
            .role(format!("arn:aws:iam::{}:role/{ROLE}", account.id))
            .code(FunctionCode::builder().zip_file(self.next_zip()).build())
            .send()
            .await
            .map_err(|e| format!("create {name}: {e:?}"))?;
        for version in 0..published {
            if version > 0 {
                self.update_code(client, name).await?;
            }
            client
                .publish_version()
                .function_name(name)
                .send()
                .await
                .map_err(|e| format!("publish {name}: {e:?}"))?;
        }
        Ok(())
    }

    async fn update_code(&self, client: &aws_sdk_lambda::Client, name: &str) -> Result<(), String> {
        client
            .update_function_code()
            .function_name(name)
            .zip_file(self.next_zip())
            .send()
            .await
            .map_err(|e| format!("update the code of {name}: {e:?}"))?;
        Ok(())
    }

    /// A new version of `name` (new code, then PublishVersion); its number.
    pub async fn publish(
        &self,
        client: &aws_sdk_lambda::Client,
        name: &str,
    ) -> Result<String, String> {
        self.update_code(client, name).await?;
        let published = client
            .publish_version()
            .function_name(name)
            .send()
            .await
            .map_err(|e| format!("publish {name}: {e:?}"))?;
        published
            .version()
            .map(str::to_string)
            .ok_or_else(|| format!("no version in PublishVersion's answer for {name}"))
    }

    /// Every account, account-region and function of `sizes`.
    pub async fn fill(&self, sizes: &Sizes) -> Result<(Vec<Account>, Vec<AccountRegion>), String> {
        let mut accounts = Vec::new();
        for index in 0..sizes.accounts {
            accounts.push(self.account(index).await?);
        }
        let mut account_regions = Vec::new();
        for (account, identity) in accounts.iter().enumerate() {
            for region in REGIONS.iter().take(sizes.regions) {
                account_regions.push(AccountRegion {
                    index: account_regions.len(),
                    account,
                    region: region.to_string(),
                    client: self.client(identity, region),
                });
            }
        }
        let work: Vec<(usize, String)> = account_regions
            .iter()
            .flat_map(|ar| {
                let groups = sizes.groups(ar.index);
                (0..sizes.functions).map(move |i| (ar.index, function_name(i % groups, i)))
            })
            .collect();
        let (accounts_ref, ars_ref) = (&accounts, &account_regions);
        stream::iter(work)
            .map(|(k, name)| async move {
                let ar = &ars_ref[k];
                self.function(
                    &ar.client,
                    &accounts_ref[ar.account],
                    &name,
                    sizes.versions - 1,
                )
                .await
            })
            .buffer_unordered(MOTO_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok((accounts, account_regions))
    }
}

/// The bench's Upstreams: Upstream `u` on account-region `u % ars`, group `u / ars`, expecting
/// every version of the functions of its group.
pub fn upstreams(sizes: &Sizes) -> Vec<BenchUpstream> {
    let ars = sizes.account_regions();
    (0..sizes.upstreams)
        .map(|u| {
            let (k, group) = (u % ars, u / ars);
            let groups = sizes.groups(k);
            let expected = (0..sizes.functions)
                .filter(|i| i % groups == group)
                .flat_map(|i| {
                    let name = function_name(group, i);
                    (0..sizes.versions).map(move |v| logical_name(&name, v))
                })
                .collect();
            BenchUpstream {
                name: format!("lambda-{k:02}-{group:04}"),
                account_region: k,
                group,
                expected,
            }
        })
        .collect()
}

pub fn secret_name(account: usize) -> String {
    format!("aws-account-{account}")
}

/// One Secret per account and the Upstreams, in `namespace`.
pub async fn create_objects(
    admin: &Client,
    namespace: &str,
    accounts: &[Account],
    account_regions: &[AccountRegion],
    upstreams: &[BenchUpstream],
) -> Result<(), String> {
    let secrets = Api::<Secret>::namespaced(admin.clone(), namespace);
    for (index, account) in accounts.iter().enumerate() {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name(index)},
            "stringData": {
                "aws_access_key_id": account.access_key_id,
                "aws_secret_access_key": account.secret_access_key,
            },
        }))
        .map_err(|e| format!("Secret: {e}"))?;
        secrets
            .patch(
                &secret_name(index),
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|e| format!("apply Secret {index}: {e}"))?;
    }
    let api = Api::<Upstream>::namespaced(admin.clone(), namespace);
    stream::iter(upstreams)
        .map(|u| {
            let api = api.clone();
            let ar = &account_regions[u.account_region];
            async move {
                let upstream: Upstream = serde_json::from_value(json!({
                    "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                    "metadata": {
                        "name": u.name,
                        "annotations": {FILTER_ANNOTATION: format!("^fn-g{:04}-", u.group)},
                    },
                    "spec": {"aws": {
                        "region": ar.region,
                        "secretRef": {"name": secret_name(ar.account), "namespace": namespace},
                    }},
                }))
                .map_err(|e| format!("Upstream: {e}"))?;
                api.create(&PostParams::default(), &upstream)
                    .await
                    .map_err(|e| format!("create Upstream {}: {e}", u.name))
            }
        })
        .buffer_unordered(KUBE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}
