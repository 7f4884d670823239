//! Lambda functions in moto for one test (docs/development.md).
//!
//! moto is shared by every test of the run and keeps its state for the environment's life, so
//! each test works in its own AWS region through its own [`Moto`]. Calls go straight to moto
//! with the AWS SDK (static test credentials, standard retries), never through a proxy.
//!
//! moto quirks worth knowing (moto 5.2.5):
//! - ListFunctions, ListVersionsByFunction and ListAliases ignore `MaxItems` and `Marker`: one
//!   page with everything (the `aws_proxy` pages like AWS).
//! - `LastModified` looks like `2026-01-01T12:00:00.123456000Z` (AWS: `...+0000`); a published
//!   version gets the time it was published.
//! - `LastModified` of `$LATEST` never changes after CreateFunction: UpdateFunctionCode and
//!   UpdateFunctionConfiguration leave it alone (only `CodeSha256` and `CodeSize` change). The
//!   `aws_proxy` emulates AWS here.
//! - PublishVersion with nothing changed since the last publish answers the last version
//!   again instead of a new one; [`Moto::publish_version`] changes the code first when needed.
//! - Versions are numbered 1, 2, ... per function; ListFunctions with `FunctionVersion=ALL`
//!   lists each function's `$LATEST` followed by its versions, functions in creation order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, FunctionVersion, Runtime};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use crate::test_env::TestEnv;

/// The access key the tests sign with (moto checks no signature).
pub const TEST_ACCESS_KEY_ID: &str = "AKIDTESTING0000000001";
pub const TEST_SECRET_ACCESS_KEY: &str = "e2e-test-secret-access-key-0000000001";
/// moto's default account, where the role must live for CreateFunction to accept it.
pub const ACCOUNT_ID: &str = "123456789012";
/// The IAM role every test function runs as.
pub const ROLE_NAME: &str = "upstream-discovery-e2e-lambda";
/// How many fixture calls run side by side in the bulk helpers.
const CONCURRENCY: usize = 8;

/// A Lambda client for `endpoint` (moto, or a proxy in front of it) in `region`, signing with
/// the test credentials.
pub fn lambda_client(endpoint: &str, region: &str, retry: RetryConfig) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "e2e-static",
        ))
        .endpoint_url(endpoint)
        .retry_config(retry)
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

/// A tiny but valid zip holding `index.py`, whose handler returns `serial` (so each serial
/// gives different code and a different `CodeSha256`).
pub fn function_zip(serial: u64) -> Vec<u8> {
    let name = b"index.py";
    let data = format!("def handler(event, context):\n    return {serial}\n").into_bytes();
    let crc = crc32(&data);
    let size = u32::try_from(data.len()).expect("small file");
    let name_len = u16::try_from(name.len()).expect("short name");
    // DOS time 00:00:00, date 1980-01-01.
    let (time, date) = (0u16, 0x21u16);

    let mut zip = Vec::new();
    // Local file header, stored (no compression).
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for field in [20u16, 0, 0, time, date] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&name_len.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(name);
    zip.extend_from_slice(&data);

    let central_at = u32::try_from(zip.len()).expect("small zip");
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    for field in [20u16, 20, 0, 0, time, date] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    for field in [name_len, 0, 0, 0, 0] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    // External attributes (rw-r--r-- regular file), offset of the local header.
    zip.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(name);
    let central_size = u32::try_from(zip.len()).expect("small zip") - central_at;

    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for field in [0u16, 0, 1, 1] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&central_size.to_le_bytes());
    zip.extend_from_slice(&central_at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// moto seen from one test: its URL, the test's region and an SDK client for them.
pub struct Moto {
    url: String,
    region: String,
    client: aws_sdk_lambda::Client,
    /// Makes every code upload different.
    serial: AtomicU64,
    /// Functions published with nothing changed since: moto would answer the same version.
    unchanged_since_publish: Mutex<HashSet<String>>,
}

impl Moto {
    /// The fixture for `region`; makes sure the role exists in moto's IAM (idempotent).
    pub async fn new(env: &TestEnv, region: &str) -> Self {
        let url = env.get("MOTO_URL").trim_end_matches('/').to_string();
        ensure_role(&url).await;
        Self {
            client: lambda_client(&url, region, RetryConfig::standard()),
            url,
            region: region.to_string(),
            serial: AtomicU64::new(1),
            unchanged_since_publish: Mutex::new(HashSet::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SDK client straight to moto (standard retries).
    pub fn client(&self) -> &aws_sdk_lambda::Client {
        &self.client
    }

    /// The ARN of the role the functions run as.
    pub fn role_arn(&self) -> String {
        format!("arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}")
    }

    fn next_zip(&self) -> Blob {
        Blob::new(function_zip(self.serial.fetch_add(1, Ordering::Relaxed)))
    }

    fn unchanged(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unchanged_since_publish
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `name` (python3.12, `index.handler`, a tiny zip).
    pub async fn create_function(&self, name: &str) {
        self.client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Python312)
            .handler("index.handler")
            .role(self.role_arn())
            .code(FunctionCode::builder().zip_file(self.next_zip()).build())
            .send()
            .await
            .unwrap_or_else(|e| panic!("create function {name} in {}: {e:?}", self.region));
    }

    /// Creates every one of `names`, [`CONCURRENCY`] at a time.
    pub async fn create_functions(&self, names: &[String]) {
        futures::stream::iter(names)
            .for_each_concurrent(CONCURRENCY, |name| self.create_function(name))
            .await;
    }

    /// Publishes a new version of `name` and returns its number. moto publishes nothing new
    /// when nothing changed since the last publish, so the code is changed first in that case
    /// (as AWS requires too).
    pub async fn publish_version(&self, name: &str) -> String {
        let needs_change = self.unchanged().contains(name);
        if needs_change {
            self.update_function_code(name).await;
        }
        let published = self
            .client
            .publish_version()
            .function_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("publish a version of {name} in {}: {e:?}", self.region));
        self.unchanged().insert(name.to_string());
        published
            .version()
            .unwrap_or_else(|| panic!("no version in the PublishVersion answer for {name}"))
            .to_string()
    }

    /// Uploads new code to `$LATEST` (new `CodeSha256`). On AWS this changes `LastModified` of
    /// `$LATEST`; moto leaves it, and the `aws_proxy` emulates the change for what it relays.
    pub async fn update_function_code(&self, name: &str) {
        self.client
            .update_function_code()
            .function_name(name)
            .zip_file(self.next_zip())
            .send()
            .await
            .unwrap_or_else(|e| panic!("update the code of {name} in {}: {e:?}", self.region));
        self.unchanged().remove(name);
    }

    /// Creates alias `alias` of `name` pointing at `version`.
    pub async fn create_alias(&self, name: &str, alias: &str, version: &str) {
        self.client
            .create_alias()
            .function_name(name)
            .name(alias)
            .function_version(version)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create alias {alias} of {name}:{version} in {}: {e:?}",
                    self.region
                )
            });
    }

    /// Deletes `name` with all its versions and aliases.
    pub async fn delete_function(&self, name: &str) {
        self.client
            .delete_function()
            .function_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete function {name} in {}: {e:?}", self.region));
        self.unchanged().remove(name);
    }

    /// Every `(name, version)` of the region, `$LATEST` included, straight from moto, sorted.
    pub async fn list_all_versions(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .client
            .list_functions()
            .function_version(FunctionVersion::All)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list the functions of {}: {e:?}", self.region))
            .into_iter()
            .map(|f| {
                (
                    f.function_name().unwrap_or_default().to_string(),
                    f.version().unwrap_or_default().to_string(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Deletes every function of the region (for a test that may find leftovers of an earlier
    /// run against a long-lived moto); returns how many there were.
    pub async fn clean_region(&self) -> usize {
        let names: HashSet<String> = self
            .list_all_versions()
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        futures::stream::iter(&names)
            .for_each_concurrent(CONCURRENCY, |name| self.delete_function(name))
            .await;
        names.len()
    }
}

/// Creates [`ROLE_NAME`] in moto's IAM unless it is there (IAM is global per account).
async fn ensure_role(moto_url: &str) {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let body = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={ROLE_NAME}&AssumeRolePolicyDocument={}",
        form_encode(policy)
    );
    let request = hyper::Request::post(format!("{moto_url}/"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"
            ),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("CreateRole request");
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("moto at {moto_url} does not answer CreateRole: {e}"));
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    assert!(
        status.is_success() || text.contains("EntityAlreadyExists"),
        "CreateRole {ROLE_NAME} in moto: {status} {text}"
    );
}

/// `application/x-www-form-urlencoded` encoding of `text`.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
