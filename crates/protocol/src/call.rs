//! Behaviour names bound to their message types, and typed adapters over the actor system:
//! a caller names a [`Call`] and gets its reply type back, a provider registers a handler that
//! receives the request type; neither side spells a behaviour name or looks a field up by
//! string. A request of the wrong shape is refused with an [`ActorError`] of kind `Failed`, a
//! reply of the wrong shape is one of kind `Rejected`; both name the behaviour and the type
//! expected, never a panic.

use std::future::Future;
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem, Behavior, ErrorKind, Handle, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::names::ensemble_namespace;

/// One request/reply pair of the protocol and the behaviour it goes to.
pub trait Call: 'static {
    /// The behaviour name; for a per-ensemble call ([`Call::PER_ENSEMBLE`]) the part after
    /// `/dms/ensemble/<id>`.
    const NAME: &'static str;
    /// Whether the behaviour lives under `/dms/ensemble/<id>` (use the `_in` adapters).
    const PER_ENSEMBLE: bool = false;
    /// What is sent.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What comes back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The full behaviour name: [`Call::NAME`], or under `/dms/ensemble/<ensemble>` for a
    /// per-ensemble call.
    fn behavior(ensemble: Option<&str>) -> String {
        match ensemble {
            Some(e) if Self::PER_ENSEMBLE => format!("{}{}", ensemble_namespace(e), Self::NAME),
            _ => Self::NAME.to_string(),
        }
    }
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Decodes `v` as `T`; `null` reads as `{}` (an empty payload), so requests without fields
/// may be sent without a body.
fn decode<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    match v {
        Value::Null => serde_json::from_value(Value::Object(Default::default())),
        v => serde_json::from_value(v),
    }
}

/// The reply `v` of `behavior` as `C::Reply`, or an error naming both.
pub fn decode_reply<C: Call>(behavior: &str, v: Value) -> Result<C::Reply, ActorError> {
    decode(v).map_err(|e| {
        ActorError::new(
            ErrorKind::Rejected,
            format!(
                "the reply of {behavior} is not a {}: {e}",
                short_type::<C::Reply>()
            ),
        )
    })
}

/// The payload `v` sent to `behavior` as `C::Request`, or an error naming both (kind
/// `Failed`, as when a handler refuses its input).
pub fn decode_request<C: Call>(behavior: &str, v: Value) -> Result<C::Request, ActorError> {
    decode(v).map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!(
                "the payload of {behavior} is not a {}: {e}",
                short_type::<C::Request>()
            ),
        )
    })
}

/// `req` as JSON (a type of this crate always encodes; an error is still reported, not
/// swallowed).
pub fn encode<T: Serialize>(behavior: &str, v: &T) -> Result<Value, ActorError> {
    serde_json::to_value(v).map_err(|e| {
        ActorError::failed(format!(
            "{behavior}: cannot encode {}: {e}",
            short_type::<T>()
        ))
    })
}

async fn invoke_named<C: Call>(
    system: &ActorSystem,
    from: &str,
    to: Handle,
    behavior: String,
    req: &C::Request,
    timeout: Duration,
) -> Result<C::Reply, ActorError> {
    let payload = encode(&behavior, req)?;
    let v = system.invoke(from, to, &behavior, payload, timeout).await?;
    decode_reply::<C>(&behavior, v)
}

/// Invokes `C` on `to` from actor `from` and decodes its reply.
pub async fn invoke<C: Call>(
    system: &ActorSystem,
    from: &str,
    to: Handle,
    req: &C::Request,
    timeout: Duration,
) -> Result<C::Reply, ActorError> {
    invoke_named::<C>(system, from, to, C::behavior(None), req, timeout).await
}

/// Invokes the per-ensemble call `C` of ensemble `ensemble` on `to`.
pub async fn invoke_in<C: Call>(
    system: &ActorSystem,
    from: &str,
    to: Handle,
    ensemble: &str,
    req: &C::Request,
    timeout: Duration,
) -> Result<C::Reply, ActorError> {
    invoke_named::<C>(system, from, to, C::behavior(Some(ensemble)), req, timeout).await
}

/// A direct behaviour that decodes `C::Request`, runs `f(state, message, request)` and encodes
/// its `C::Reply`.
pub fn behavior<C, S, F, Fut>(name: String, state: S, f: F) -> Behavior
where
    C: Call,
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Incoming, C::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, ActorError>> + Send + 'static,
{
    let f = std::sync::Arc::new(f);
    Behavior::direct(move |m: Incoming| {
        let (state, f, name) = (state.clone(), f.clone(), name.clone());
        async move {
            let req = decode_request::<C>(&name, m.payload.clone())?;
            let reply = f(state, m, req).await?;
            encode(&name, &reply)
        }
    })
}

/// Registers `C` (under the ensemble's namespace when `ensemble` is given) on `inbox`.
fn register_at<C, S, F, Fut>(
    system: &ActorSystem,
    inbox: &str,
    ensemble: Option<&str>,
    state: S,
    f: F,
) -> Result<(), ActorError>
where
    C: Call,
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Incoming, C::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, ActorError>> + Send + 'static,
{
    let name = C::behavior(ensemble);
    system.register(
        inbox,
        &name,
        behavior::<C, S, F, Fut>(name.clone(), state, f),
    )
}

/// Registers `C` on actor `inbox` (see [`behavior`]).
pub fn register<C, S, F, Fut>(
    system: &ActorSystem,
    inbox: &str,
    state: S,
    f: F,
) -> Result<(), ActorError>
where
    C: Call,
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Incoming, C::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, ActorError>> + Send + 'static,
{
    register_at::<C, S, F, Fut>(system, inbox, None, state, f)
}

/// Registers the per-ensemble call `C` of ensemble `ensemble` on actor `inbox`.
pub fn register_in<C, S, F, Fut>(
    system: &ActorSystem,
    inbox: &str,
    ensemble: &str,
    state: S,
    f: F,
) -> Result<(), ActorError>
where
    C: Call,
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Incoming, C::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, ActorError>> + Send + 'static,
{
    register_at::<C, S, F, Fut>(system, inbox, Some(ensemble), state, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{AllocationStatusCall, Commit, EnsembleLogs};
    use crate::{AllocationStatus, CommitRequest, LogsRequest};
    use nunet_actor::SystemConfig;
    use nunet_capability::Anchors;
    use nunet_did::Keypair;
    use serde_json::json;

    fn system() -> ActorSystem {
        let key = Keypair::from_seed(&[3; 32]);
        ActorSystem::new(
            key.clone(),
            Anchors::new(key.did()),
            SystemConfig::default(),
        )
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_typed_call_round_trips_through_the_actor_system() {
        let sys = system();
        register::<AllocationStatusCall, _, _, _>(&sys, "root", (), |(), _m, _req| async {
            Ok(crate::AllocationState {
                status: AllocationStatus::Completed,
                exit_code: Some(0),
                reason: None,
                health: None,
                restarts: 0,
            })
        })
        .expect("register");
        let got = invoke::<AllocationStatusCall>(&sys, "root", sys.root(), &Default::default(), T)
            .await
            .expect("reply");
        assert_eq!(got.status, AllocationStatus::Completed);
        assert_eq!(got.exit_code, Some(0));
        // Per-ensemble calls are registered and reached under the ensemble's namespace.
        register_in::<EnsembleLogs, _, _, _>(&sys, "root", "e1", (), |(), _m, req| async move {
            Ok(crate::AllocationLogs {
                allocation: Some(req.allocation),
                ..Default::default()
            })
        })
        .expect("register");
        assert!(
            sys.behaviors("root")
                .contains(&crate::names::ensemble_allocation_logs("e1"))
        );
        let req = LogsRequest {
            allocation: "a-1".into(),
            ..Default::default()
        };
        let got = invoke_in::<EnsembleLogs>(&sys, "root", sys.root(), "e1", &req, T)
            .await
            .expect("reply");
        assert_eq!(got.allocation.as_deref(), Some("a-1"));
        let other = invoke_in::<EnsembleLogs>(&sys, "root", sys.root(), "e2", &req, T)
            .await
            .expect_err("not registered for e2");
        assert_eq!(other.kind, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_reply_of_the_wrong_shape_is_an_error_naming_the_behavior() {
        let sys = system();
        // A provider that answers commit with something else than `Committed`.
        sys.register_with("root", crate::names::COMMIT, (), |(), _m| async {
            Ok(json!({"ok": "yes", "committed": 3}))
        })
        .expect("register");
        let req = CommitRequest {
            ensemble_id: "e".into(),
            node_id: "n".into(),
            allocations: Vec::new(),
            expires_at_ms: 0,
        };
        let e = invoke::<Commit>(&sys, "root", sys.root(), &req, T)
            .await
            .expect_err("malformed reply");
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert!(
            e.message.contains("/dms/deployment/commit"),
            "{}",
            e.message
        );
        assert!(e.message.contains("Committed"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_request_of_the_wrong_shape_is_refused_before_the_handler_runs() {
        let sys = system();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        register::<Commit, _, _, _>(&sys, "root", ran.clone(), |ran, _m, _req| async move {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(crate::Committed {
                ok: true,
                committed: Vec::new(),
            })
        })
        .expect("register");
        let e = sys
            .invoke(
                "root",
                sys.root(),
                crate::names::COMMIT,
                json!({"ensemble_id": 7}),
                T,
            )
            .await
            .expect_err("malformed request");
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.message.contains("CommitRequest"), "{}", e.message);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        // An empty payload reads as `{}` for requests without fields.
        let v = sys
            .invoke(
                "root",
                sys.root(),
                crate::names::COMMIT,
                serde_json::Value::Null,
                T,
            )
            .await
            .expect_err("commit needs fields");
        assert!(v.message.contains("missing field"), "{}", v.message);
    }
}
