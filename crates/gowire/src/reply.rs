//! Replies as NuNet sends them (`actor/msg.go` `ReplyTo`, `actor/basic.go` `Invoke`): a new
//! envelope to the requester's handle, behavior `opt.cont` of the request, the request's
//! expiry, a fresh nonce, signed by the replier. The requester registered `opt.cont` as a
//! one-shot behavior whose capability is its own name, and handed the replier a delegation
//! for it (`{act: delegate, iss: requester, sub: replier's DID, cap: [cont], depth: 1}`); the
//! replier's invocation token is chained on that delegation, so it is anchored in the
//! requester's own DID (`lib/ucan/context.go`, `Provide`).

use nunet_capability::token::Claims;
use nunet_capability::{Action, Capability, Token, TokenFormat, TokenList};
use nunet_did::Keypair;

use crate::id::key_id;
use crate::{GoEnvelope, GoHandle, GoWireError};

/// The token list for answering `req` as `key`'s node: an invocation of `req.cont` chained on
/// the requester's delegation of it when the request carried one, else self-signed.
pub fn reply_tokens(req: &GoEnvelope, key: &Keypair) -> Result<TokenList, GoWireError> {
    let cont: Capability = req
        .cont
        .parse()
        .map_err(|e| GoWireError::Reply(format!("`opt.cont` {:?}: {e}", req.cont)))?;
    let me = key.did();
    let requester = crate::id::did_of_key_id(&req.from.id)?;
    let delegation = if req.cap.is_empty() {
        None
    } else {
        TokenList::from_json(&req.cap)
            .map_err(|e| GoWireError::Reply(format!("request tokens: {e}")))?
            .tok
            .into_iter()
            .find(|t| {
                let d = t.dms();
                d.act == Action::Delegate && d.sub == me && d.cap.iter().any(|c| c.implies(&cont))
            })
    };
    let claims = Claims {
        act: Action::Invoke,
        sub: me,
        aud: Some(requester),
        topic: Vec::new(),
        cap: vec![cont],
        exp: req.exp,
        depth: 0,
        rev: None,
    };
    let token = Token::issue_as(TokenFormat::NuNet, key, claims, delegation)
        .map_err(|e| GoWireError::Reply(e.to_string()))?;
    Ok(TokenList { tok: vec![token] })
}

/// A request can be answered only when it names its reply behavior (`opt.cont`).
fn names_a_reply(req: &GoEnvelope) -> Result<(), GoWireError> {
    if req.cont.is_empty() {
        return Err(GoWireError::Reply(
            "the request names no reply behavior".into(),
        ));
    }
    Ok(())
}

/// The signed reply to `req` carrying `payload` (JSON bytes), from the node whose key is
/// `key`. `req` must have been addressed to that key.
pub fn reply_to(
    req: &GoEnvelope,
    key: &Keypair,
    payload: Vec<u8>,
    nonce: u64,
) -> Result<GoEnvelope, GoWireError> {
    names_a_reply(req)?;
    if req.to.id != key_id(&key.public()) {
        return Err(GoWireError::Reply(
            "the request was not addressed to this node's key".into(),
        ));
    }
    let tokens = reply_tokens(req, key)?;
    // ReplyTo: from = the request's receiver as written.
    answer(req, key, req.to.clone(), &tokens, payload, nonce)
}

/// The signed message answering `req` on its `opt.cont`, from `from` (the request's
/// receiver; this node's root handle for a broadcast, whose receiver is empty), with
/// `tokens`, the request's expiry and `payload`.
pub fn answer(
    req: &GoEnvelope,
    key: &Keypair,
    from: GoHandle,
    tokens: &TokenList,
    payload: Vec<u8>,
    nonce: u64,
) -> Result<GoEnvelope, GoWireError> {
    names_a_reply(req)?;
    let mut env = GoEnvelope {
        to: req.from.clone(),
        be: req.cont.clone(),
        from,
        nonce,
        exp: req.exp,
        cont: String::new(),
        topic: String::new(),
        msg: Some(payload),
        cap: tokens.to_json().into_bytes(),
        sig: Vec::new(),
        native: None,
    };
    env.sign(key)?;
    Ok(env)
}
