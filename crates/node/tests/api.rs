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
    router(ApiState { system })
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
    assert!(body["error"].as_str().unwrap().contains("local"));
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

#[tokio::test]
async fn malformed_envelopes_get_a_clear_4xx() {
    let mut req = Request::post("/api/v1/actor/invoke")
        .header("content-type", "application/json")
        .body(Body::from("{\"be\": 1"))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:9".parse::<SocketAddr>().unwrap()));
    let resp = app().oneshot(req).await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let big = vec![b'x'; 2 * 1024 * 1024];
    let mut req = Request::post("/api/v1/actor/invoke")
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:9".parse::<SocketAddr>().unwrap()));
    let resp = app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
