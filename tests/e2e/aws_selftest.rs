//! The Lambda proxy and fixture themselves: paging like AWS, faults in Lambda's wire format,
//! and the `LastModified` emulation, against moto.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, FunctionVersion, Runtime};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use crate::aws_fixture::{function_zip, lambda_client, Moto, TEST_ACCESS_KEY_ID};
use crate::aws_proxy::{AwsFault, AwsRule, LambdaProxy};
use crate::test_env::TestEnv;

const REGION: &str = "ap-south-1";

/// `(code, status)` of an SDK error.
fn code_and_status<E: ProvideErrorMetadata>(error: &SdkError<E>) -> (String, u16) {
    (
        error.code().unwrap_or_default().to_string(),
        error.raw_response().map_or(0, |r| r.status().as_u16()),
    )
}

pub async fn the_lambda_proxy_pages_and_injects_faults(env: Arc<TestEnv>) {
    let moto = Moto::new(&env, REGION).await;
    moto.clean_region().await;

    // 120 functions, a version published on 10 of them.
    let names: Vec<String> = (0..120).map(|i| format!("selftest-{i:03}")).collect();
    let started = Instant::now();
    moto.create_functions(&names).await;
    eprintln!("created 120 functions in {:?}", started.elapsed());
    let started = Instant::now();
    let published =
        futures::future::join_all(names[..10].iter().map(|n| moto.publish_version(n))).await;
    eprintln!("published 10 versions in {:?}", started.elapsed());
    assert!(published.iter().all(|v| v == "1"), "{published:?}");
    let expected = moto.list_all_versions().await;
    assert_eq!(expected.len(), 130, "{expected:?}");

    let proxy = LambdaProxy::start(moto.url()).await;
    let client = lambda_client(&proxy.url(), REGION, RetryConfig::disabled());

    // Paging through the SDK's paginator: 3 pages of 50, 50 and 30.
    let pages: Vec<_> = client
        .list_functions()
        .function_version(FunctionVersion::All)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("list the functions through the proxy");
    let sizes: Vec<usize> = pages.iter().map(|p| p.functions().len()).collect();
    assert_eq!(sizes, [50, 50, 30]);
    assert!(pages[2].next_marker().is_none());
    let mut listed: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p.functions())
        .map(|f| {
            (
                f.function_name().unwrap_or_default().to_string(),
                f.version().unwrap_or_default().to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, expected);
    assert_eq!(proxy.count_in("ListFunctions", REGION), 3);
    let seen = proxy.requests();
    assert!(seen
        .iter()
        .all(|s| s.status == 200 && s.access_key_id == TEST_ACCESS_KEY_ID && s.region == REGION));

    // MaxItems below the page size, a marker that keeps FunctionVersion, a foreign marker.
    let first = client
        .list_functions()
        .function_version(FunctionVersion::All)
        .max_items(20)
        .send()
        .await
        .expect("a page of 20");
    assert_eq!(first.functions().len(), 20);
    let marker = first.next_marker().expect("more after 20").to_string();
    let second = client
        .list_functions()
        .function_version(FunctionVersion::All)
        .marker(&marker)
        .max_items(500)
        .send()
        .await
        .expect("the page after 20");
    assert_eq!(second.functions().len(), 50);
    let error = client
        .list_functions()
        .marker("not-a-marker")
        .send()
        .await
        .expect_err("a foreign marker is refused");
    assert_eq!(
        code_and_status(&error),
        ("InvalidParameterValueException".to_string(), 400)
    );

    // Faults: once, then moto answers again.
    for (fault, code, status) in [
        (AwsFault::TooManyRequests, "TooManyRequestsException", 429),
        (AwsFault::Forbidden, "UnrecognizedClientException", 403),
        (AwsFault::AccessDenied, "AccessDeniedException", 403),
        (AwsFault::Throttling, "ThrottlingException", 400),
        (AwsFault::ServerError, "ServiceException", 500),
    ] {
        let rule = proxy
            .rules
            .inject(AwsRule::new("ListFunctions", fault.clone()).times(1));
        let error = client
            .list_functions()
            .send()
            .await
            .expect_err("the injected fault");
        assert_eq!(
            code_and_status(&error),
            (code.to_string(), status),
            "{fault:?}"
        );
        assert_eq!(proxy.rules.remaining(rule), Some(0));
        let last = proxy.requests().pop().expect("recorded");
        assert_eq!(
            (last.operation.as_str(), last.status),
            ("ListFunctions", status)
        );
        client
            .list_functions()
            .send()
            .await
            .unwrap_or_else(|e| panic!("after {fault:?}: {e:?}"));
        proxy.rules.remove(rule);
    }
    // A rule for another region or key leaves these requests alone.
    proxy
        .rules
        .inject(AwsRule::new("ListFunctions", AwsFault::Forbidden).region("eu-west-1"));
    proxy
        .rules
        .inject(AwsRule::new("ListFunctions", AwsFault::Forbidden).access_key_id("AKIDOTHER"));
    client
        .list_functions()
        .send()
        .await
        .expect("rules for others do not apply");
    proxy.rules.clear();

    // A delay holds the request, then moto answers.
    let delay = Duration::from_millis(300);
    proxy
        .rules
        .inject(AwsRule::new("ListFunctions", AwsFault::Delay(delay)).times(1));
    let started = Instant::now();
    client
        .list_functions()
        .send()
        .await
        .expect("delayed, then answered");
    assert!(started.elapsed() >= delay);
    let last = proxy.requests().pop().expect("recorded");
    assert_eq!(
        (last.method.as_str(), last.status, last.fault.as_deref()),
        ("GET", 200, Some("delay 300ms"))
    );
    assert!(
        last.path.starts_with("/2015-03-31/functions"),
        "{}",
        last.path
    );
    assert!(last.at >= started);
    assert!(proxy.count("ListFunctions") >= proxy.count_in("ListFunctions", moto.region()));

    // ListVersionsByFunction: $LATEST and 60 versions, in pages of 50 and 11.
    let versioned = "selftest-versions";
    moto.create_function(versioned).await;
    let started = Instant::now();
    let mut versions = Vec::new();
    for _ in 0..60 {
        versions.push(moto.publish_version(versioned).await);
    }
    eprintln!(
        "published 60 versions of one function in {:?}",
        started.elapsed()
    );
    let numbers: Vec<String> = (1..=60).map(|n| n.to_string()).collect();
    assert_eq!(versions, numbers);
    let pages: Vec<_> = client
        .list_versions_by_function()
        .function_name(versioned)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("list the versions through the proxy");
    let sizes: Vec<usize> = pages.iter().map(|p| p.versions().len()).collect();
    assert_eq!(sizes, [50, 11]);
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.versions())
        .filter_map(|v| v.version().map(str::to_string))
        .collect();
    let mut expected_versions = vec!["$LATEST".to_string()];
    expected_versions.extend(numbers.iter().cloned());
    assert_eq!(listed, expected_versions);
    assert_eq!(proxy.count_in("ListVersionsByFunction", REGION), 2);

    // ListAliases: 55 aliases, in pages of 50 and 5.
    let aliases: Vec<(String, String)> = (1..=55)
        .map(|n| (format!("alias-{n:02}"), n.to_string()))
        .collect();
    let started = Instant::now();
    futures::future::join_all(
        aliases
            .iter()
            .map(|(alias, version)| moto.create_alias(versioned, alias, version)),
    )
    .await;
    eprintln!("created 55 aliases in {:?}", started.elapsed());
    let pages: Vec<_> = client
        .list_aliases()
        .function_name(versioned)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("list the aliases through the proxy");
    let sizes: Vec<usize> = pages.iter().map(|p| p.aliases().len()).collect();
    assert_eq!(sizes, [50, 5]);
    let mut listed: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p.aliases())
        .map(|a| {
            (
                a.name().unwrap_or_default().to_string(),
                a.function_version().unwrap_or_default().to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, aliases);
    assert_eq!(proxy.count_in("ListAliases", REGION), 2);

    // New code gives $LATEST a new LastModified through the proxy (moto keeps the old one);
    // a function left alone keeps its own.
    let latest_modified = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .list_versions_by_function()
                .function_name(name)
                .send()
                .await
                .expect("list versions")
                .versions()
                .iter()
                .find(|v| v.version() == Some("$LATEST"))
                .and_then(|v| v.last_modified().map(str::to_string))
                .expect("$LATEST")
        }
    };
    let before = latest_modified("selftest-000").await;
    let other_before = latest_modified("selftest-001").await;
    moto.update_function_code("selftest-000").await;
    let after = latest_modified("selftest-000").await;
    assert!(after > before, "{before} then {after}");
    assert_eq!(latest_modified("selftest-000").await, after);
    assert_eq!(latest_modified("selftest-001").await, other_before);
    let in_moto = moto
        .client()
        .get_function_configuration()
        .function_name("selftest-000")
        .send()
        .await
        .expect("straight from moto");
    assert_eq!(
        in_moto.last_modified(),
        Some(before.as_str()),
        "moto's quirk"
    );
    proxy.emulate_last_modified(false);
    assert_eq!(latest_modified("selftest-000").await, before);
    proxy.emulate_last_modified(true);
    assert_eq!(latest_modified("selftest-000").await, after);

    // The writes the proxy tells apart, forwarded to moto.
    let proxied = "selftest-proxied";
    client
        .create_function()
        .function_name(proxied)
        .runtime(Runtime::Python312)
        .handler("index.handler")
        .role(moto.role_arn())
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(function_zip(7)))
                .build(),
        )
        .send()
        .await
        .expect("CreateFunction through the proxy");
    let version = client
        .publish_version()
        .function_name(proxied)
        .send()
        .await
        .expect("PublishVersion through the proxy");
    client
        .create_alias()
        .function_name(proxied)
        .name("live")
        .function_version(version.version().unwrap_or_default())
        .send()
        .await
        .expect("CreateAlias through the proxy");
    client
        .delete_function()
        .function_name(proxied)
        .send()
        .await
        .expect("DeleteFunction through the proxy");
    for operation in [
        "CreateFunction",
        "PublishVersion",
        "CreateAlias",
        "DeleteFunction",
    ] {
        assert_eq!(proxy.count_in(operation, REGION), 1, "{operation}");
    }
    assert!(!moto
        .list_all_versions()
        .await
        .iter()
        .any(|(name, _)| name == proxied));

    // STS speaks the query protocol: its faults are XML, its Action names the operation.
    let rule = proxy
        .rules
        .inject(AwsRule::new("GetCallerIdentity", AwsFault::Forbidden).times(1));
    let (status, body) = sts_call(&proxy.url(), "GetCallerIdentity").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("<Code>InvalidClientTokenId</Code>") && body.contains("<ErrorResponse"),
        "{body}"
    );
    assert_eq!(proxy.rules.remaining(rule), Some(0));
    let (status, body) = sts_call(&proxy.url(), "GetCallerIdentity").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("GetCallerIdentityResult"), "{body}");
    let sts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|s| s.operation == "GetCallerIdentity")
        .map(|s| (s.region, s.access_key_id, s.status))
        .collect();
    let key = TEST_ACCESS_KEY_ID.to_string();
    assert_eq!(
        sts,
        [
            ("eu-central-1".to_string(), key.clone(), 403),
            ("eu-central-1".to_string(), key, 200)
        ]
    );
    proxy.shutdown().await;
}

/// A signed-looking STS query call through the proxy: `(status, body)`.
async fn sts_call(endpoint: &str, action: &str) -> (u16, String) {
    let request = hyper::Request::post(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/20260101/eu-central-1/sts/aws4_request, SignedHeaders=host, Signature=0"
            ),
        )
        .body(Full::new(Bytes::from(format!(
            "Action={action}&Version=2011-06-15"
        ))))
        .expect("STS request");
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("the proxy answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("STS answer body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
