//! Property tests of chain verification: random valid chains (1–6 tokens) are accepted, and
//! breaking exactly one rule is denied with that rule's name.
#![allow(clippy::unwrap_used, missing_docs)]

use nunet_capability::token::Claims;
use nunet_capability::{Action, Anchors, Capability, Denied, Request, Token, Verifier};
use nunet_did::{Did, Keypair};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000_000_000;
const CAPS: [&str; 4] = [
    "/dms",
    "/dms/node",
    "/dms/node/peers",
    "/dms/node/peers/ping",
];
const TOPICS: [&str; 2] = ["/nunet", "/nunet/deployment"];

fn cap(s: &str) -> Capability {
    s.parse().unwrap()
}

/// One token of the chain, position 0 = invocation, last = root.
#[derive(Clone, Debug)]
struct Spec {
    act: Action,
    sub: Did,
    aud: Option<Did>,
    cap: Vec<Capability>,
    topic: Vec<Capability>,
    exp: u64,
    depth: u64,
}

#[derive(Clone, Debug)]
struct Chain {
    keys: Vec<Keypair>,
    specs: Vec<Spec>,
    node: Keypair,
}

impl Chain {
    fn sender(&self) -> Did {
        self.keys[0].did()
    }

    fn build(&self) -> Token {
        let n = self.specs.len();
        let mut parent: Option<Token> = None;
        for p in (0..n).rev() {
            let s = &self.specs[p];
            let claims = Claims {
                act: s.act,
                sub: s.sub.clone(),
                aud: s.aud.clone(),
                topic: s.topic.clone(),
                cap: s.cap.clone(),
                exp: s.exp,
                depth: s.depth,
                rev: None,
            };
            let nonce = vec![p as u8; 12];
            parent = Some(Token::issue_with_nonce(
                &self.keys[p],
                claims,
                parent.take(),
                nonce,
            ));
        }
        parent.unwrap()
    }

    fn anchors(&self) -> Anchors {
        let mut a = Anchors::new(self.node.did());
        a.add_root(self.keys.last().unwrap().did());
        a
    }

    fn verify_with(&self, tok: &Token, anchors: &Anchors) -> Result<(), Denied> {
        let sender = self.sender();
        let node = self.node.did();
        let want = cap("/dms/node/peers/ping");
        let req = Request {
            action: Action::Invoke,
            subject: &sender,
            audience: &node,
            capability: &want,
            topic: None,
        };
        Verifier::default()
            .verify(tok, &req, anchors, NOW)
            .map(|_| ())
    }

    fn verify(&self) -> Result<(), Denied> {
        self.verify_with(&self.build(), &self.anchors())
    }
}

/// Random valid chain of `n` tokens.
fn chain() -> impl Strategy<Value = Chain> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec(any::<[u8; 32]>(), n),
                prop::collection::vec(0usize..2, n), // capability narrowing steps
                prop::collection::vec(0usize..2, n), // topic narrowing steps
                prop::collection::vec(0u64..1_000_000, n), // expiry decrements (s)
                prop::collection::vec(0u64..3, n),   // depth slack (0 = unlimited)
                0usize..=n,                          // where the audience gets fixed (n = never)
            )
        })
        .prop_map(|(n, seeds, cstep, tstep, dexp, dslack, audpos)| {
            let keys: Vec<Keypair> = seeds.iter().map(Keypair::from_seed).collect();
            let node = Keypair::from_seed(&[0xAA; 32]);
            let mut specs: Vec<Spec> = Vec::with_capacity(n);
            let (mut cl, mut tl, mut exp) = (0usize, 0usize, NOW + 10_000_000_000_000_000);
            let mut aud = None;
            // Walk from the root (p = n-1) down to the invocation (p = 0).
            for p in (0..n).rev() {
                cl = (cl + cstep[p]).min(CAPS.len() - 1);
                tl = (tl + tstep[p]).min(TOPICS.len() - 1);
                exp -= dexp[p] * 1_000_000_000;
                if p == audpos.min(n) && audpos < n {
                    aud = Some(node.did());
                }
                let sub = if p == 0 {
                    keys[0].did()
                } else {
                    keys[p - 1].did()
                };
                // Valid: unlimited, or at least the number of tokens below (p).
                let depth = if dslack[p] == 0 {
                    0
                } else {
                    p as u64 + dslack[p] - 1
                };
                specs.push(Spec {
                    act: if p == 0 {
                        Action::Invoke
                    } else {
                        Action::Delegate
                    },
                    sub,
                    aud: aud.clone(),
                    cap: vec![cap(CAPS[cl])],
                    topic: vec![cap(TOPICS[tl])],
                    exp,
                    depth,
                });
            }
            specs.reverse();
            Chain { keys, specs, node }
        })
}

fn rule(r: Result<(), Denied>) -> &'static str {
    match r {
        Ok(()) => "accepted",
        Err(d) => d.rule(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_chains_are_accepted(c in chain()) {
        prop_assert_eq!(rule(c.verify()), "accepted");
    }

    #[test]
    fn not_anchored_elsewhere(c in chain()) {
        let stranger = Anchors::new(c.node.did());
        prop_assert_eq!(rule(c.verify_with(&c.build(), &stranger)), "not-anchored");
    }

    #[test]
    fn expired_chain(c in chain(), j in any::<prop::sample::Index>()) {
        let mut c = c;
        let j = j.index(c.specs.len());
        // Tokens j and below expire before now (keeping expiry monotone down the chain).
        for i in 0..=j {
            c.specs[i].exp = NOW - 1 - (j - i) as u64;
        }
        prop_assert_eq!(rule(c.verify()), "expired");
    }

    #[test]
    fn one_broken_link(c in chain(), which in 0usize..9, j in any::<prop::sample::Index>()) {
        let mut c = c;
        let n = c.specs.len();
        prop_assume!(n >= 2 || which >= 7);
        let link = j.index(n.saturating_sub(1).max(1)); // child position of a link (0..n-1)
        let expect = match which {
            0 => {
                c.specs[link].exp = c.specs[link + 1].exp + 1;
                "outlives-chain"
            }
            1 => {
                c.specs[link + 1].sub = Keypair::from_seed(&[0x55; 32]).did();
                "issuer-subject-mismatch"
            }
            2 => {
                c.specs[link].cap.push(cap("/other"));
                "capability-widened"
            }
            3 => {
                c.specs[link].topic.push(cap("/zzz"));
                "topic-widened"
            }
            4 => {
                let node = c.node.did();
                for s in &mut c.specs[link + 1..] { s.aud = Some(node.clone()); }
                c.specs[link].aud = None;
                "audience-widened"
            }
            5 => {
                c.specs[link + 1].act = Action::Invoke;
                "chain-not-delegate"
            }
            6 => {
                // The root allows one token below it, but there are n-1 >= 2.
                prop_assume!(n >= 3);
                c.specs[n - 1].depth = 1;
                "depth-exceeded"
            }
            7 => {
                let at = j.index(n);
                let tok = c.build();
                let mut t = tok.clone();
                // Walk down to position `at` and flip one signature byte there.
                let mut cur = &mut t;
                for _ in 0..at { cur = cur.dms_mut().chain.as_mut().unwrap(); }
                cur.dms_mut().sig[7] ^= 0x01;
                prop_assert_eq!(rule(c.verify_with(&t, &c.anchors())), "bad-signature");
                return Ok(());
            }
            _ => {
                let at = j.index(n);
                let tok = c.build();
                let mut cur = &tok;
                for _ in 0..at { cur = cur.dms().chain.as_ref().unwrap(); }
                // Revoked by the issuer of the revoked token or of any token above it.
                let revoker_pos = at + (j.index(n - at));
                let mut anchors = c.anchors();
                anchors.revoke(&c.keys[revoker_pos], cur).unwrap();
                prop_assert_eq!(rule(c.verify_with(&tok, &anchors)), "revoked");
                // A revocation by somebody off the chain has no effect.
                let mut other = c.anchors();
                other.revoke(&Keypair::from_seed(&[0x77; 32]), cur).unwrap();
                prop_assert_eq!(rule(c.verify_with(&tok, &other)), "accepted");
                return Ok(());
            }
        };
        prop_assert_eq!(rule(c.verify()), expect);
    }
}
