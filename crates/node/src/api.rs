//! `http://127.0.0.1:9999/api/v1`: the local bridge between the CLI and the actor system.
//! The CLI signs envelopes with the user's key; the daemon never holds that key and never
//! decides authorization here: the receiving actor checks signatures and tokens.
//! Requests from non-loopback peers are refused even when the API is bound wider.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{StatusCode, Uri};
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
        let e = ActorError::new(ErrorKind::Denied, "the DMS API only serves local clients");
        return err(StatusCode::FORBIDDEN, &e);
    }
    next.run(req).await
}

/// Every error answer: the status and `{"error": ActorError}` (schema `Error`).
fn err(status: StatusCode, e: &ActorError) -> Response {
    (status, Json(json!({"error": e}))).into_response()
}

async fn not_found(uri: Uri) -> Response {
    let e = ActorError::new(ErrorKind::NotFound, format!("no API route {}", uri.path()));
    err(StatusCode::NOT_FOUND, &e)
}

async fn method_not_allowed() -> Response {
    let e = ActorError::new(ErrorKind::Rejected, "method not allowed on this route");
    err(StatusCode::METHOD_NOT_ALLOWED, &e)
}

/// A JSON request body whose rejections (no JSON content type: 415, not JSON: 400, not the
/// expected shape: 422, over the body limit: 413) are answered like every other error.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(r) => Err(rejection(&r)),
        }
    }
}

fn rejection(r: &JsonRejection) -> Response {
    let e = ActorError::new(ErrorKind::Rejected, r.body_text());
    err(r.status(), &e)
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

async fn send(State(s): State<ApiState>, JsonBody(env): JsonBody<Envelope>) -> Response {
    match s.system.deliver(env).await {
        Ok(reply) => match nunet_actor::system::decode_reply(&reply) {
            Ok(_) => Json(json!({"message": "message sent"})).into_response(),
            Err(e) => err(status_of(&e), &e),
        },
        Err(e) => err(status_of(&e), &e),
    }
}

/// Returns the receiver's signed reply envelope (its `msg` holds `{"ok": …}` or `{"error": …}`).
async fn invoke(State(s): State<ApiState>, JsonBody(env): JsonBody<Envelope>) -> Response {
    match s.system.deliver(env).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => err(status_of(&e), &e),
    }
}

/// Publishes a signed broadcast and returns the replies that reach `opt.cont` before the
/// message expires (at most 60 s).
async fn broadcast(State(s): State<ApiState>, JsonBody(env): JsonBody<Envelope>) -> Response {
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

/// The OpenAPI 3 description of this API. Every status a route can answer is listed; every
/// error body is an `Error`.
pub fn openapi() -> Value {
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |what: &str, schema: Value| json!({"description": what, "content": {"application/json": {"schema": schema}}});
    let local_only = error("the client is not on this host (the API serves loopback clients only)");
    // What delivering an envelope can answer besides success (see `status_of`).
    let delivery = |success: Value| {
        json!({
            "200": success,
            "400": error("rejected: not JSON, or a bad signature, expiry, replay or format"),
            "403": error("denied by the receiver's capability check, or a non-local client"),
            "404": error("no such actor or behavior on the receiver"),
            "413": error("the body is larger than the envelope limit (1 MiB)"),
            "415": error("the body is not declared as application/json"),
            "422": error("the body is not an envelope, or the behavior failed"),
            "502": error("the receiver could not be reached"),
            "504": error("the receiver did not answer before the envelope expired")
        })
    };
    let get_op = |summary: &str, success: Value| json!({"get": {"summary": summary, "responses": {"200": success, "403": local_only}}});
    let post_op = |summary: &str, success: Value| json!({"post": {"summary": summary, "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}, "responses": delivery(success)}});
    let string_field = |name: &str| json!({"type": "object", "required": [name], "properties": {name: {"type": "string"}}});
    let u64_schema = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let bytes = json!({"type": "string", "format": "byte", "nullable": true, "description": "standard base64"});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "NuNet DMS local API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Local bridge to the node's actor system. Served on loopback only; envelopes are signed by the caller and authorized by the receiving actor."},
        // Relative: the API is served on the configured rest.addr / rest.port.
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/health": get_op("Liveness", ok("ok", string_field("status"))),
            "/api/v1/version": get_op("Daemon version", ok("version", string_field("version"))),
            "/api/v1/openapi.json": get_op("This document", ok("OpenAPI 3 document", json!({"type": "object"}))),
            "/api/v1/actor/handle": get_op("The root actor's handle", ok("handle", json!({"$ref": "#/components/schemas/Handle"}))),
            "/api/v1/actor/send": post_op("Deliver a signed envelope (one way)", ok("delivered", string_field("message"))),
            "/api/v1/actor/invoke": post_op("Deliver a signed envelope and return the signed reply envelope", ok("reply envelope; its msg is {\"ok\": …} or {\"error\": …}", json!({"$ref": "#/components/schemas/Envelope"}))),
            "/api/v1/actor/broadcast": post_op("Publish a signed broadcast and collect replies until it expires (≤ 60 s)", ok("the replies", json!({"type": "object", "required": ["replies"], "properties": {"replies": {"type": "array", "items": {"$ref": "#/components/schemas/Envelope"}}}})))
        },
        "components": {"schemas": {
            "Handle": {"type": "object", "properties": {"id": {"type": "string"}, "did": {"type": "string"},
                "addr": {"type": "object", "properties": {"host": {"type": "string"}, "inbox": {"type": "string"}}}}},
            "Envelope": {"type": "object", "required": ["be", "from", "nonce", "opt"], "properties": {
                "to": {"$ref": "#/components/schemas/Handle"}, "be": {"type": "string"}, "from": {"$ref": "#/components/schemas/Handle"},
                "nonce": u64_schema,
                "opt": {"type": "object", "required": ["exp"], "properties": {"exp": {"description": "expiry, unix ns", "allOf": [u64_schema]}, "cont": {"type": "string"}, "topic": {"type": "string"}}},
                "msg": bytes, "cap": bytes, "sig": bytes}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["kind", "message"], "properties": {
                "kind": {"type": "string", "enum": ["denied", "rejected", "not_found", "timeout", "failed", "unreachable"]},
                "rule": {"type": "string", "description": "for denials: the capability rule that failed"},
                "message": {"type": "string"}}}}}
        }}
    })
}
