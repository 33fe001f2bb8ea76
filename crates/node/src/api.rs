//! `http://127.0.0.1:9999/api/v1`: the local bridge between the CLI and the actor system.
//! The CLI signs envelopes with the user's key; the daemon never holds that key and never
//! decides authorization here: the receiving actor checks signatures and tokens.
//! Requests from non-loopback peers are refused even when the API is bound wider.
//!
//! Reading a request is bounded ([`ServeLimits`]): its headers must arrive within a few
//! seconds of the connection opening (or of the previous response), its body soon after, and
//! only so many connections are kept at once. The handler's own work is not bounded here:
//! `invoke` may wait until its envelope expires, `broadcast` up to 60 s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use nunet_actor::{ActorError, ActorSystem, Envelope, ErrorKind, MAX_ENVELOPE_BYTES};
use nunet_capability::now_ns;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

/// Default of [`ServeLimits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`ServeLimits::body_read_timeout`].
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServeLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 64;

/// How much a client can make the REST server hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// A connection whose request headers are not complete this long after it opened, or
    /// after its previous response (an idle keep-alive connection), is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived this long after its headers gets
    /// `408 Request Timeout` and its connection is closed. Together with
    /// [`header_read_timeout`](Self::header_read_timeout) this bounds reading a whole
    /// request; answering it is not bounded.
    pub body_read_timeout: Duration,
    /// Connections at once. At the limit a new connection closes the oldest one that has no
    /// request in progress; when every one is busy the new one is closed instead.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    /// 5 s for headers, 10 s for the body, 64 connections.
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// API state.
#[derive(Clone)]
pub struct ApiState {
    /// The node's actors.
    pub system: ActorSystem,
    /// The node's metrics, served at `/metrics` (`None`: that route answers 404).
    pub metrics: Option<Arc<prometheus_client::registry::Registry>>,
    /// File transfers, whose bytes go through `/api/v1/files/...` (`None`: those routes
    /// answer 404).
    pub files: Option<nunet_files::Files>,
    /// Followed output (`deployment logs -f`), streamed at `/api/v1/output/...` (`None`:
    /// that route answers 404).
    pub output: Option<Arc<nunet_output::Sessions>>,
    /// The operator's dashboard at `/ui/` and `/api/v1/ui/...` (`None`: those answer 404).
    pub dashboard: Option<nunet_dashboard::Dashboard>,
}

/// The API routes, reading request bodies within [`BODY_READ_TIMEOUT`].
pub fn router(state: ApiState) -> Router {
    router_with(state, BODY_READ_TIMEOUT)
}

/// The API routes, reading request bodies within `body_read_timeout`.
pub fn router_with(state: ApiState, body_read_timeout: Duration) -> Router {
    // File bytes stream for as long as a transfer takes: neither the envelope size limit nor
    // the body deadline applies to them (a transfer session, handed out by a
    // capability-checked call, is what they need).
    let files = Router::new()
        .route(
            "/api/v1/files/{session}/{index}",
            get(pull_file).put(push_file),
        )
        .route(
            "/api/v1/files/{session}/{index}/to/{target}",
            axum::routing::post(relay_file),
        )
        .route("/api/v1/output/{session}", get(follow_output));
    let dashboard = state.dashboard.clone();
    let api = Router::new()
        .route(
            "/api/v1/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/api/v1/version",
            get(|| async { Json(json!({"version": env!("CARGO_PKG_VERSION")})) }),
        )
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/metrics", get(metrics))
        .route("/api/v1/actor/handle", get(handle))
        .route("/api/v1/actor/send", post(send))
        .route("/api/v1/actor/invoke", post(invoke))
        .route("/api/v1/actor/broadcast", post(broadcast))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_ENVELOPE_BYTES))
        .layer(middleware::from_fn_with_state(
            body_read_timeout,
            read_body_in_time,
        ))
        .merge(files)
        .with_state(state);
    let app = match dashboard {
        Some(d) => api.merge(
            nunet_dashboard::router(d).layer(middleware::from_fn_with_state(
                body_read_timeout,
                read_body_in_time,
            )),
        ),
        None => api,
    };
    app.layer(middleware::from_fn(loopback_only))
}

/// Serves the API on `listener` with the default [`ServeLimits`] until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeLimits::default(), shutdown).await
}

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Requests being read or answered on it.
    busy: Arc<AtomicUsize>,
    /// Closes it (dropping the sender does too).
    evict: oneshot::Sender<()>,
}

/// Open connections by age (ids only grow).
type Slots = Arc<Mutex<BTreeMap<u64, Slot>>>;

/// Counts a request as in progress on its connection until dropped.
struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    fn enter(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Self(busy.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often refused connections are reported, as a count.
const REFUSED_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors…), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves the API on `listener` within `limits` until `shutdown` resolves, then lets the
/// open connections finish their requests.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with(state, limits.body_read_timeout);
    let slots: Slots = Arc::default();
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut next_id = 0u64;
    let mut refused = 0u64;
    let mut next_report = tokio::time::Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "REST API: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let (evict_tx, evicted) = oneshot::channel();
        if !admit(&slots, limits.max_connections, id, busy.clone(), evict_tx) {
            drop(stream);
            refused += 1;
            let now = tokio::time::Instant::now();
            if now >= next_report {
                tracing::warn!(
                    refused,
                    limit = limits.max_connections,
                    "REST API: connections refused, every connection is busy"
                );
                refused = 0;
                next_report = now + REFUSED_REPORT_INTERVAL;
            }
            continue;
        }
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let in_progress = InProgress::enter(&busy);
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req).await;
                    drop(in_progress);
                    resp
                }
            });
        let slots = slots.clone();
        let mut closing = closing.clone();
        conns.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "REST connection ended");
                    }
                }
                // Dropping the connection closes its socket.
                _ = evicted => tracing::debug!(%peer, "REST connection closed for a newer one"),
                () = async { drop(closing.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Makes room for connection `id`: at the limit the oldest connection without a request in
/// progress is closed; `false` when every connection is busy.
fn admit(
    slots: &Slots,
    max: usize,
    id: u64,
    busy: Arc<AtomicUsize>,
    evict: oneshot::Sender<()>,
) -> bool {
    let mut s = slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if s.len() >= max.max(1) {
        let idle = s
            .iter()
            .find(|(_, slot)| slot.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|oldest| s.remove(&oldest)) {
            Some(slot) => {
                let _ = slot.evict.send(());
            }
            None => return false,
        }
    }
    s.insert(id, Slot { busy, evict });
    true
}

/// Reads the whole request body within `timeout` (at most [`MAX_ENVELOPE_BYTES`]) before the
/// handler runs, so a client that trickles its body cannot hold a connection: `408` and the
/// connection closed when it is late, `413` when it is too long.
async fn read_body_in_time(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_ENVELOPE_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_long {
                let e = ActorError::new(
                    ErrorKind::Rejected,
                    format!("request body over {MAX_ENVELOPE_BYTES} bytes"),
                );
                err(StatusCode::PAYLOAD_TOO_LARGE, &e)
            } else {
                let e = ActorError::new(
                    ErrorKind::Rejected,
                    format!("cannot read the request body: {e}"),
                );
                err(StatusCode::BAD_REQUEST, &e)
            }
        }
        Err(_) => {
            let e = ActorError::new(
                ErrorKind::Timeout,
                format!("request body not received within {timeout:?}"),
            );
            let mut r = err(StatusCode::REQUEST_TIMEOUT, &e);
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
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

/// OpenMetrics text of the node's registry. Encoding reads the node's state under its
/// locks, so it runs on the blocking pool.
async fn metrics(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let Some(registry) = s.metrics else {
        let e = ActorError::new(ErrorKind::NotFound, "metrics are not served by this API");
        return err(StatusCode::NOT_FOUND, &e);
    };
    let format = crate::metrics::Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    match tokio::task::spawn_blocking(move || crate::metrics::render(&registry, format)).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        _ => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ActorError::failed("encoding the metrics failed"),
        ),
    }
}

/// The entry index and `offset` query of a file route, or why they are wrong.
fn file_at(index: &str, query: Option<&str>) -> Result<(u32, u64), String> {
    let index = index
        .parse()
        .map_err(|_| format!("entry index {index:?} is not a number"))?;
    let mut offset = 0;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("offset", v)) => {
                offset = v
                    .parse()
                    .map_err(|_| format!("offset {v:?} is not a byte count"))?;
            }
            _ => return Err(format!("unknown query parameter {pair:?} (only offset)")),
        }
    }
    Ok((index, offset))
}

fn bad_request(m: String) -> Response {
    err(
        StatusCode::BAD_REQUEST,
        &ActorError::new(ErrorKind::Rejected, m),
    )
}

fn files_err(e: &nunet_files::FilesError) -> Response {
    use nunet_files::FilesError as F;
    let (status, kind) = match e {
        F::NoSession(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
        F::Bad(_) => (StatusCode::BAD_REQUEST, ErrorKind::Rejected),
        F::Unreachable(_) => (StatusCode::BAD_GATEWAY, ErrorKind::Unreachable),
        F::Peer(_) => (StatusCode::BAD_GATEWAY, ErrorKind::Failed),
    };
    err(status, &ActorError::new(kind, e.to_string()))
}

/// Header of a file's bytes saying how they came from the peer.
const PATH_HEADER: &str = "x-nunet-path";

/// `direct` (a connection of their own) or `stream` (the libp2p connection).
fn path_name(direct: bool) -> &'static str {
    if direct { "direct" } else { "stream" }
}

fn no_files() -> Response {
    let e = ActorError::new(ErrorKind::NotFound, "this API serves no file transfers");
    err(StatusCode::NOT_FOUND, &e)
}

/// The bytes of one file of a fetch session, from `offset`, as the peer sends them.
async fn pull_file(
    State(s): State<ApiState>,
    axum::extract::Path((session, index)): axum::extract::Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(files) = s.files else {
        return no_files();
    };
    let (index, offset) = match file_at(&index, query.as_deref()) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    match files.pull(&session, index, offset).await {
        Ok((len, direct, body)) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .header(PATH_HEADER, path_name(direct))
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| {
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &ActorError::failed("response"),
                )
            }),
        Err(e) => files_err(&e),
    }
}

/// One file of a send session, from `offset`: the body goes to the peer, which checks its
/// digest and places it before this answers.
async fn push_file(
    State(s): State<ApiState>,
    axum::extract::Path((session, index)): axum::extract::Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Body,
) -> Response {
    let Some(files) = s.files else {
        return no_files();
    };
    let (index, offset) = match file_at(&index, query.as_deref()) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    match files
        .push(&session, index, offset, body.into_data_stream())
        .await
    {
        Ok(direct) => Json(json!({"message": "stored", "path": path_name(direct)})).into_response(),
        Err(e) => files_err(&e),
    }
}

/// One file of a fetch session piped into the same entry of a send session, from `offset`
/// (a copy between two peers through this node: the bytes never reach the caller's disk).
async fn relay_file(
    State(s): State<ApiState>,
    axum::extract::Path((session, index, target)): axum::extract::Path<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(files) = s.files else {
        return no_files();
    };
    let (index, offset) = match file_at(&index, query.as_deref()) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    let (_, from_direct, body) = match files.pull(&session, index, offset).await {
        Ok(v) => v,
        Err(e) => return files_err(&e),
    };
    match files.push(&target, index, offset, body).await {
        Ok(direct) => Json(json!({
            "message": "stored",
            "from": path_name(from_direct),
            "path": path_name(direct)
        }))
        .into_response(),
        Err(e) => files_err(&e),
    }
}

/// A follow session's output as frames (`nunet_output::frame`), for as long as it lasts:
/// pushed as providers send it, and only as fast as the client reads.
async fn follow_output(
    State(s): State<ApiState>,
    axum::extract::Path(session): axum::extract::Path<String>,
) -> Response {
    let Some(frames) = s.output.as_ref().and_then(|o| o.claim(&session)) else {
        let e = ActorError::new(
            ErrorKind::NotFound,
            "no such follow session (each is claimed once, within 30 s of the logs call)",
        );
        return err(StatusCode::NOT_FOUND, &e);
    };
    let body = futures::stream::unfold(frames, |mut rx| async move {
        let f = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(f.to_bytes()), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ActorError::failed("response"),
            )
        })
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
    // The dashboard's views: the bearer token of `nunet dashboard`, a loopback Host.
    let ui_responses = |success: Value| {
        json!({
            "200": ok("the view", success),
            "400": error("a malformed query or body"),
            "401": error("no valid dashboard token (see `nunet dashboard`)"),
            "405": error("method not allowed on this route"),
            "408": error("the request body did not arrive in time"),
            "413": error("the request body is too large"),
            "403": error("a non-local client, or a Host that is not a loopback name"),
            "404": error("no such deployment, or no dashboard on this node"),
            "422": error("the behaviour read for the view failed"),
            "502": error("a peer the view needs could not be reached"),
            "504": error("the node did not answer in time")
        })
    };
    let ui_get = |summary: &str, parameters: Vec<Value>| {
        json!({"get": {"summary": summary, "security": [{"dashboardToken": []}], "parameters": parameters,
            "responses": ui_responses(json!({"type": "object"}))}})
    };
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
            "/metrics": {"get": {"summary": "The node's metrics: OpenMetrics text when the Accept header asks for it, else Prometheus text 0.0.4",
                "responses": {
                    "200": {"description": "metrics", "content": {
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                        "text/plain": {"schema": {"type": "string"}}}},
                    "403": local_only,
                    "404": error("this API serves no metrics"),
                    "500": error("encoding the metrics failed")}}},
            "/api/v1/actor/handle": get_op("The root actor's handle", ok("handle", json!({"$ref": "#/components/schemas/Handle"}))),
            "/api/v1/actor/send": post_op("Deliver a signed envelope (one way)", ok("delivered", string_field("message"))),
            "/api/v1/actor/invoke": post_op("Deliver a signed envelope and return the signed reply envelope", ok("reply envelope; its msg is {\"ok\": …} or {\"error\": …}", json!({"$ref": "#/components/schemas/Envelope"}))),
            "/api/v1/files/{session}/{index}": {
                "parameters": [
                    {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}, "description": "from /dms/node/files/fetch or /dms/node/files/send"},
                    {"name": "index", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}, "description": "the file's entry in the manifest"},
                    {"name": "offset", "in": "query", "required": false, "schema": u64_schema, "description": "first byte (resuming)"}],
                "get": {"summary": "The bytes of one file of a fetch session, as the peer sends them",
                    "responses": {
                        "200": {"description": "the file from offset on; header x-nunet-path says how the bytes came from the peer (direct: a connection of their own; stream: the libp2p connection)", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        "400": error("not a file of this transfer, or a bad index or offset"),
                        "403": local_only,
                        "404": error("no such session (unknown or lapsed), or no file transfers here"),
                        "502": error("the peer could not be reached or refused")}},
                "put": {"summary": "One file of a send session; answers once the peer has checked its digest and placed it",
                    "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {
                        "200": ok("stored; path says how the bytes went to the peer (direct or stream)", json!({"type": "object", "required": ["message", "path"], "properties": {"message": {"type": "string"}, "path": {"type": "string", "enum": ["direct", "stream"]}}})),
                        "400": error("not a file of this transfer, a bad index or offset, or a body of the wrong length"),
                        "403": local_only,
                        "404": error("no such session (unknown or lapsed), or no file transfers here"),
                        "502": error("the peer could not be reached, refused, or found the bytes wrong")}}},
            "/api/v1/files/{session}/{index}/to/{target}": {
                "parameters": [
                    {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}, "description": "a fetch session (from /dms/node/cp/fetch)"},
                    {"name": "index", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}, "description": "the file's entry in both manifests"},
                    {"name": "target", "in": "path", "required": true, "schema": {"type": "string"}, "description": "a send session (from /dms/node/cp/send) of the same manifest"},
                    {"name": "offset", "in": "query", "required": false, "schema": u64_schema, "description": "first byte (resuming)"}],
                "post": {"summary": "One file copied from the fetch session's peer to the send session's peer through this node; answers once the receiving peer has checked its digest and placed it",
                    "responses": {
                        "200": ok("stored; from and path say how the bytes came and went (direct or stream)", json!({"type": "object", "required": ["message", "from", "path"], "properties": {"message": {"type": "string"}, "from": {"type": "string", "enum": ["direct", "stream"]}, "path": {"type": "string", "enum": ["direct", "stream"]}}})),
                        "400": error("not a file of both transfers, or a bad index or offset"),
                        "403": local_only,
                        "404": error("no such session (unknown or lapsed), or no file transfers here"),
                        "502": error("a peer could not be reached, refused, or found the bytes wrong")}}},
            "/api/v1/output/{session}": {
                "parameters": [
                    {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}, "description": "from /dms/node/deployment/logs with follow: true (claimed once, within 30 s)"}],
                "get": {"summary": "A deployment's followed output as frames, pushed as providers send it",
                    "responses": {
                        "200": {"description": "frames until a done frame: each a 15-byte head (kind, key length, offset, data length; big-endian) then the key (<node>.<allocation>) and the data", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        "403": local_only,
                        "404": error("no such session (unknown, claimed, or lapsed), or no followed output here")}}},
            "/api/v1/ui/node": ui_get("This node: status, identity, reachability, peers, onboarded/free/allocated resources, hosted allocations", vec![]),
            "/api/v1/ui/history": ui_get("The node's resources every 5 s over the last hour", vec![
                json!({"name": "after", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "only samples after this time (Unix ms)"})]),
            "/api/v1/ui/deployments": ui_get("The deployments this node orchestrates", vec![]),
            "/api/v1/ui/deployments/{id}": ui_get("One deployment: summary with events, timeline, manifest", vec![
                json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})]),
            "/api/v1/ui/deployments/{id}/follow": {"post": {
                "summary": "Open a follow session of a deployment's output (read it at /api/v1/output/{session})",
                "security": [{"dashboardToken": []}],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"allocation": {"type": "string"}}}}}},
                "responses": ui_responses(json!({"type": "object", "required": ["session", "url"], "properties": {"session": {"type": "string"}, "url": {"type": "string"}}}))}},
            "/api/v1/ui/codes": {"post": {
                "summary": "A one-time code (one use, within 60 s) that a dashboard page trades for the token: what `nunet dashboard` puts in its URL",
                "security": [{"dashboardToken": []}],
                "responses": ui_responses(json!({"type": "object", "required": ["code", "expires_in_s"], "properties": {"code": {"type": "string"}, "expires_in_s": {"type": "integer"}}}))}},
            "/api/v1/ui/session": {"post": {
                "summary": "Trade a one-time code for the dashboard token",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"code": {"type": "string"}}}}}},
                "responses": ui_responses(json!({"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}))}},
            "/api/v1/actor/broadcast": post_op("Publish a signed broadcast and collect replies until it expires (≤ 60 s)", ok("the replies", json!({"type": "object", "required": ["replies"], "properties": {"replies": {"type": "array", "items": {"$ref": "#/components/schemas/Envelope"}}}})))
        },
        "components": {
          "securitySchemes": {"dashboardToken": {"type": "http", "scheme": "bearer",
              "description": "the token in <data_dir>/dashboard.token, new at every start of the daemon; `nunet dashboard` prints a URL with it"}},
          "schemas": {
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
