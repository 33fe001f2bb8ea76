//! The dashboard's routes over a real actor system (no behaviours registered beyond the
//! node's own): the Host rule, the token, the one-time codes, the headers of every answer,
//! and JSON errors for bad input and wrong methods.
#![allow(clippy::unwrap_used, missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use nunet_dashboard::Dashboard;
use serde_json::Value;
use tower::ServiceExt;

fn dashboard(dir: &std::path::Path) -> Dashboard {
    let key = nunet_did::Keypair::from_seed(&[9; 32]);
    let system = nunet_actor::ActorSystem::new(
        key.clone(),
        nunet_capability::Anchors::new(key.did()),
        nunet_actor::SystemConfig::default(),
    );
    Dashboard::new(system, dir).unwrap()
}

async fn call(
    d: &Dashboard,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header(header::HOST, "127.0.0.1:9999");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = nunet_dashboard::router(d.clone())
        .oneshot(b.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, v)
}

#[tokio::test]
async fn views_need_the_token_and_a_loopback_host_and_codes_work_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dashboard(dir.path());
    let token = std::fs::read_to_string(dir.path().join(nunet_dashboard::TOKEN_FILE)).unwrap();
    assert_eq!(token, d.token().as_str());
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];

    // No token, a wrong one: 401 with a JSON error that says what to do; never cached.
    let (s, h, v) = call(&d, "GET", "/api/v1/ui/deployments", &[], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nunet dashboard")
    );
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let wrong = format!("Bearer {}", "1".repeat(64));
    let (s, ..) = call(
        &d,
        "GET",
        "/api/v1/ui/node",
        &[("Authorization", &wrong)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A rebound DNS name: 403 even with the token, and before a code is spent.
    let (s, _, v) = call(
        &d,
        "GET",
        "/api/v1/ui/node",
        &[("Authorization", &bearer), ("Host", "evil.example")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // With the token: the node view answers; parts that have no behaviour here say why.
    let (s, h, v) = call(&d, "GET", "/api/v1/ui/node", &auth, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["onboarding"]["error"].is_string(), "{v}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let (s, _, v) = call(&d, "GET", "/api/v1/ui/history?after=x", &auth, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = call(&d, "GET", "/api/v1/ui/history?after=0", &auth, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["samples"].is_array(), "{v}");
    let (s, _, v) = call(
        &d,
        "POST",
        "/api/v1/ui/deployments/abcdef/follow",
        &auth,
        "{nope",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allocation"),
        "{v}"
    );

    // A code is issued only with the token, trades for the token once.
    let (s, ..) = call(&d, "POST", "/api/v1/ui/codes", &[], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = call(&d, "POST", "/api/v1/ui/codes", &auth, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let code = v["code"].as_str().unwrap().to_string();
    let body = format!(r#"{{"code": "{code}"}}"#);
    let (s, _, v) = call(&d, "POST", "/api/v1/ui/session", &[], &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token"], token);
    let (s, _, v) = call(&d, "POST", "/api/v1/ui/session", &[], &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "spent: {v}");
    let (s, _, v) = call(&d, "POST", "/api/v1/ui/session", &[], "[1]").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Wrong methods are answered in JSON too.
    let (s, _, v) = call(&d, "DELETE", "/api/v1/ui/node", &auth, "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["kind"], "rejected", "{v}");

    // The page needs no token; its files are not there to guess.
    let (s, h, _) = call(&d, "GET", "/ui/", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    let (s, _, v) = call(&d, "GET", "/ui/assets/none.js", &[], "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}
