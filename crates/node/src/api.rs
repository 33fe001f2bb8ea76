//! `http://127.0.0.1:9999/api/v1`: the local bridge between the CLI and the actor system.
//! The CLI signs envelopes with the user's key; the daemon never holds that key and never
//! decides authorization here: the receiving actor checks signatures and tokens.
//! Requests from non-loopback peers are refused even when the API is bound wider.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nunet_actor::{ActorError, ActorSystem, Envelope, ErrorKind, MAX_ENVELOPE_BYTES};
use nunet_capability::now_ns;
use serde_json::{Value, json};

/// API state.
#[derive(Clone)]
pub struct ApiState {
    /// The node's actors.
    pub system: ActorSystem,
}

/// The API routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/v1/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/api/v1/version",
            get(|| async { Json(json!({"version": env!("CARGO_PKG_VERSION")})) }),
        )
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/actor/handle", get(handle))
        .route("/api/v1/actor/send", post(send))
        .route("/api/v1/actor/invoke", post(invoke))
        .route("/api/v1/actor/broadcast", post(broadcast))
        .layer(DefaultBodyLimit::max(MAX_ENVELOPE_BYTES))
        .layer(middleware::from_fn(loopback_only))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !nunet_config::is_loopback(peer.ip()) {
        tracing::warn!(%peer, "refused REST request from a non-loopback address");
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "the DMS API only serves local clients"})),
        )
            .into_response();
    }
    next.run(req).await
}

fn err(status: StatusCode, e: &ActorError) -> Response {
    (status, Json(json!({"error": e}))).into_response()
}

fn status_of(e: &ActorError) -> StatusCode {
    match e.kind {
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unreachable => StatusCode::BAD_GATEWAY,
        ErrorKind::Rejected => StatusCode::BAD_REQUEST,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Failed => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn handle(State(s): State<ApiState>) -> Json<Value> {
    Json(serde_json::to_value(s.system.root()).unwrap_or(Value::Null))
}

async fn send(State(s): State<ApiState>, Json(env): Json<Envelope>) -> Response {
    match s.system.deliver(env).await {
        Ok(reply) => match nunet_actor::system::decode_reply(&reply) {
            Ok(_) => Json(json!({"message": "message sent"})).into_response(),
            Err(e) => err(status_of(&e), &e),
        },
        Err(e) => err(status_of(&e), &e),
    }
}

/// Returns the receiver's signed reply envelope (its `msg` holds `{"ok": …}` or `{"error": …}`).
async fn invoke(State(s): State<ApiState>, Json(env): Json<Envelope>) -> Response {
    match s.system.deliver(env).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => err(status_of(&e), &e),
    }
}

/// Publishes a signed broadcast and returns the replies that reach `opt.cont` before the
/// message expires (at most 60 s).
async fn broadcast(State(s): State<ApiState>, Json(env): Json<Envelope>) -> Response {
    if env.opt.topic.is_empty() || env.opt.cont.is_empty() || env.from.addr.inbox.is_empty() {
        let e = ActorError::new(
            ErrorKind::Rejected,
            "a broadcast needs opt.topic, opt.cont and from.addr.inbox",
        );
        return err(StatusCode::BAD_REQUEST, &e);
    }
    if env.from.addr.host != s.system.peer_id() || s.system.has_actor(&env.from.addr.inbox) {
        let e = ActorError::new(
            ErrorKind::Rejected,
            "from.addr must name this node and a fresh inbox",
        );
        return err(StatusCode::BAD_REQUEST, &e);
    }
    // Nothing unsigned or forged is handed to gossip in this node's name: every peer would
    // pay for checking it.
    if let Err(e) = env.verify_signature() {
        let e = ActorError::new(ErrorKind::Rejected, format!("broadcast envelope: {e}"));
        return err(StatusCode::BAD_REQUEST, &e);
    }
    let inbox = env.from.addr.inbox.clone();
    let mut rx = s.system.mailbox(&inbox, &env.opt.cont, 1024);
    let wait =
        Duration::from_nanos(env.opt.exp.saturating_sub(now_ns())).min(Duration::from_secs(60));
    let published = s.system.publish(&env).await;
    let mut replies = Vec::new();
    if published.is_ok() {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            replies.push(r);
        }
    }
    s.system.stop_child(&inbox);
    match published {
        Ok(()) => Json(json!({"replies": replies})).into_response(),
        Err(e) => err(status_of(&e), &e),
    }
}

/// The OpenAPI 3 description of this API.
pub fn openapi() -> Value {
    let envelope_body = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "NuNet DMS local API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Local bridge to the node's actor system. Served on loopback only; envelopes are signed by the caller and authorized by the receiving actor."},
        "servers": [{"url": "http://127.0.0.1:9999"}],
        "paths": {
            "/api/v1/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/api/v1/version": {"get": {"summary": "Daemon version", "responses": {"200": {"description": "version"}}}},
            "/api/v1/actor/handle": {"get": {"summary": "The root actor's handle", "responses": {"200": {"description": "handle", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Handle"}}}}}}},
            "/api/v1/actor/send": {"post": {"summary": "Deliver a signed envelope (one way)", "requestBody": envelope_body, "responses": {"200": {"description": "delivered"}, "403": {"description": "denied by the receiver"}, "502": {"description": "unreachable"}, "504": {"description": "timeout"}}}},
            "/api/v1/actor/invoke": {"post": {"summary": "Deliver a signed envelope and return the signed reply envelope", "requestBody": envelope_body, "responses": {"200": {"description": "reply envelope; its msg is {\"ok\": …} or {\"error\": …}"}, "502": {"description": "unreachable"}, "504": {"description": "timeout"}}}},
            "/api/v1/actor/broadcast": {"post": {"summary": "Publish a signed broadcast and collect replies until it expires (≤ 60 s)", "requestBody": envelope_body, "responses": {"200": {"description": "{\"replies\": [Envelope]}"}}}}
        },
        "components": {"schemas": {
            "Handle": {"type": "object", "properties": {"id": {"type": "string"}, "did": {"type": "string"}, "addr": {"type": "object", "properties": {"host": {"type": "string"}, "inbox": {"type": "string"}}}}},
            "Envelope": {"type": "object", "required": ["be", "from", "nonce", "opt"], "properties": {
                "to": {"$ref": "#/components/schemas/Handle"}, "be": {"type": "string"}, "from": {"$ref": "#/components/schemas/Handle"},
                "nonce": {"type": "integer", "format": "uint64"},
                "opt": {"type": "object", "properties": {"exp": {"type": "integer", "description": "unix ns"}, "cont": {"type": "string"}, "topic": {"type": "string"}}},
                "msg": {"type": "string", "format": "byte"}, "cap": {"type": "string", "format": "byte"}, "sig": {"type": "string", "format": "byte"}}}
        }}
    })
}
