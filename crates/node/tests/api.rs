//! The REST bridge serves loopback clients only, whatever address it is bound to.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use nunet_actor::{ActorSystem, SystemConfig};
use nunet_capability::Anchors;
use nunet_did::Keypair;
use nunet_node::api::{ApiState, router};
use tower::ServiceExt;

fn app() -> axum::Router {
    let key = Keypair::from_seed(&[5; 32]);
    let system = ActorSystem::new(
        key.clone(),
        Anchors::new(key.did()),
        SystemConfig::default(),
    );
    router(ApiState {
        system,
        metrics: None,
        files: None,
        output: None,
        dashboard: None,
    })
}

async fn get(from: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn non_loopback_clients_are_refused() {
    let (s, body) = get("10.1.2.3:5555", "/api/v1/actor/handle").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["kind"], "denied");
    assert!(body["error"]["message"].as_str().unwrap().contains("local"));
    let (s, _) = get("[2001:db8::1]:80", "/api/v1/health").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = get("127.0.0.1:5555", "/api/v1/actor/handle").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["addr"]["inbox"], "root");
    let (s, _) = get("[::1]:5555", "/api/v1/health").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn serves_an_openapi_document() {
    let (s, doc) = get("127.0.0.1:1", "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/api/v1/actor/invoke",
        "/api/v1/actor/send",
        "/api/v1/actor/broadcast",
        "/api/v1/actor/handle",
        "/api/v1/health",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p}");
    }
}

async fn post(
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, serde_json::Value) {
    let mut req = Request::post(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let mut req = req.body(Body::from(body)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:9".parse::<SocketAddr>().unwrap()));
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        ct,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Bodies axum's JSON extractor refuses get the documented status and a JSON `Error` body
/// (they were plain text, and 413/415 were not in the document).
#[tokio::test]
async fn malformed_envelopes_get_a_documented_4xx_with_a_json_error() {
    let json = Some("application/json");
    let big = vec![b'x'; 2 * 1024 * 1024];
    let shapeless = br#"{"be": 1}"#.to_vec();
    let cases: [(Option<&str>, Vec<u8>, StatusCode); 4] = [
        (json, b"{\"be\": \"x\"".to_vec(), StatusCode::BAD_REQUEST),
        (json, shapeless.clone(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            Some("text/plain"),
            shapeless,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (json, big, StatusCode::PAYLOAD_TOO_LARGE),
    ];
    let (_, doc) = get("127.0.0.1:1", "/api/v1/openapi.json").await;
    for route in ["send", "invoke", "broadcast"] {
        let path = format!("/api/v1/actor/{route}");
        for (ct, body, want) in &cases {
            let (s, got_ct, v) = post(&path, *ct, body.clone()).await;
            assert_eq!(s, *want, "{path} {ct:?}");
            assert_eq!(got_ct, "application/json", "{path} {want}");
            assert_eq!(v["error"]["kind"], "rejected", "{path} {want}: {v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            let documented = &doc["paths"][&path]["post"]["responses"][want.as_str()];
            assert!(
                documented["content"].is_object(),
                "{path} {want} undocumented"
            );
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let (s, v) = get("127.0.0.1:1", "/api/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["kind"], "not_found");
    let (s, _, v) = post("/api/v1/health", None, Vec::new()).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["kind"], "rejected");
}

/// Every documented answer has a body with a schema (JSON, except the metrics text and file
/// bytes), and the
/// document names no fixed port (the daemon serves wherever rest.port says).
#[tokio::test]
async fn the_openapi_document_describes_every_answer() {
    let (_, doc) = get("127.0.0.1:1", "/api/v1/openapi.json").await;
    assert_eq!(doc["servers"][0]["url"], "/");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue; // shared by the path's operations, not one
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("403"),
                "{method} {path}: 403 (non-local)"
            );
            for (status, r) in responses {
                let media = if path == "/metrics" && status == "200" {
                    "text/plain"
                } else if (path.starts_with("/api/v1/files/")
                    || path.starts_with("/api/v1/output/"))
                    && method == "get"
                    && status == "200"
                {
                    "application/octet-stream"
                } else {
                    "application/json"
                };
                let schema = &r["content"][media]["schema"];
                assert!(schema.is_object(), "{method} {path} {status}: no schema");
            }
        }
    }
}

/// `/metrics` is loopback-only like every route, answers 404 with an error body where the API
/// has no registry, and the registry's text otherwise.
#[tokio::test]
async fn metrics_are_served_to_local_clients_only() {
    let (s, _) = get("10.1.2.3:5555", "/metrics").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = get("127.0.0.1:5555", "/metrics").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found", "{body}");

    let key = Keypair::from_seed(&[6; 32]);
    let system = ActorSystem::new(
        key.clone(),
        Anchors::new(key.did()),
        SystemConfig::default(),
    );
    let app = router(ApiState {
        system,
        metrics: Some(std::sync::Arc::new(nunet_node::metrics::new_registry())),
        files: None,
        output: None,
        dashboard: None,
    });
    let mut req = Request::get("/metrics").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:1".parse::<SocketAddr>().unwrap()));
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        nunet_node::metrics::TEXT,
        "classic text unless OpenMetrics is asked for"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE nunet_bid_rounds_total counter"),
        "{text}"
    );
}

/// A follow session is claimed once, by its id, on loopback only; a stranger's guess, a second
/// claim and a node without sessions answer 404 with an error body.
#[tokio::test]
async fn followed_output_is_claimed_once_by_its_session() {
    let sessions = std::sync::Arc::new(nunet_output::Sessions::default());
    let id = sessions
        .offer(Box::new(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let _ = tx.try_send(nunet_output::Frame::Done {
                status: "completed".into(),
            });
            rx
        }))
        .unwrap();
    let key = Keypair::from_seed(&[6; 32]);
    let app = router(ApiState {
        system: ActorSystem::new(
            key.clone(),
            Anchors::new(key.did()),
            SystemConfig::default(),
        ),
        metrics: None,
        files: None,
        output: Some(sessions),
        dashboard: None,
    });
    let call = |from: &str, path: String| {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(from.parse::<SocketAddr>().unwrap()));
        app.clone().oneshot(req)
    };
    let r = call("10.0.0.9:1", format!("/api/v1/output/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call("127.0.0.1:1", "/api/v1/output/guess".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = call("127.0.0.1:1", format!("/api/v1/output/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let mut buf = bytes::BytesMut::from(&body[..]);
    assert_eq!(
        nunet_output::Frame::take(&mut buf).unwrap(),
        Some(nunet_output::Frame::Done {
            status: "completed".into()
        })
    );
    let r = call("127.0.0.1:1", format!("/api/v1/output/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "claimed once");
    let (s, body) = get("127.0.0.1:1", "/api/v1/output/any").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found");
}
