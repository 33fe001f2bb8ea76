//! `nunet cap`: capability contexts, anchors, delegations, grants and revocations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nunet_capability::{
    Action, Anchor, Anchors, Capability, Request, SelfSign, Token, TokenFormat, TokenList,
    TokenSpec, Verifier, expiry_after, now_ns,
};
use nunet_did::Did;

use crate::home::{Home, passphrase};

#[derive(Subcommand, Debug)]
pub enum CapCmd {
    /// Create a capability context (and its key, if missing) named <name>. The names
    /// `ledger`, `ledger:<account>` and `ledger:<alias>` make a context held by a Ledger
    /// wallet (through NuNet's ledger-cli, or the program in NUNET_LEDGER_CLI), stored as
    /// cap/ledger, cap/<account> or cap/<alias>.
    New {
        /// Context name: `dms` for the node, `user` for you, an organisation's name, or
        /// `ledger[:<account or alias>]`.
        name: String,
        /// Format of the tokens the context grants and delegates: `native`, or `nunet` so
        /// NuNet's own nodes accept them (a context NuNet's DMS wrote, cap/<name>.cap, uses
        /// `nunet` already). Default: `native`; `nunet` for a Ledger context, whose device
        /// shows NuNet's JSON text for each signature instead of binary.
        #[arg(long, value_name = "native|nunet", value_parser = parse_format)]
        format: Option<TokenFormat>,
    },
    /// Show a context's DID, anchors and revocations.
    List {
        #[command(flatten)]
        ctx: Ctx,
        /// Print the context as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add trust anchors: root DIDs, require tokens (whom we accept), provide tokens (what we
    /// can prove). Token arguments take JSON, @file, or - for stdin.
    Anchor {
        #[command(flatten)]
        ctx: Ctx,
        #[command(flatten)]
        anchors: AnchorArgs,
    },
    /// Remove trust anchors (same arguments as `anchor`).
    Remove {
        #[command(flatten)]
        ctx: Ctx,
        #[command(flatten)]
        anchors: AnchorArgs,
    },
    /// Delegate capabilities to <subjectDID>, chained on this context's provide anchors
    /// (or self-signed, see --self-sign). Prints the token(s) as JSON.
    Delegate {
        /// Who receives the capabilities.
        subject: String,
        #[command(flatten)]
        ctx: Ctx,
        #[command(flatten)]
        spec: SpecArgs,
        /// no: only chain on provide anchors; also: and add a self-signed token; only: self-signed only.
        #[arg(long, default_value = "no", value_name = "no|also|only")]
        self_sign: SelfSign,
    },
    /// Grant capabilities to <subjectDID> as a root of trust (self-signed): the result is
    /// ready to be a require anchor of a node or a provide anchor of the subject.
    Grant {
        /// Who receives the capabilities.
        subject: String,
        #[command(flatten)]
        ctx: Ctx,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Revoke a token (signing a revocation with this context's key), or import a revocation
    /// token received from someone else. Prints the revocation token.
    Revoke {
        /// The token to revoke, or a revoke token (JSON, @file, or -).
        token: String,
        #[command(flatten)]
        ctx: Ctx,
        /// Also hand the revoke token(s) to the local daemon, which enforces them and
        /// gossips them to every node of the network (each node keeps revocations whose
        /// issuer its trust depends on, and re-announces them every 30 s for nodes that were
        /// offline).
        #[arg(long)]
        broadcast: bool,
        /// Context that signs the hand-over to the daemon with --broadcast.
        #[arg(
            long,
            value_name = "CONTEXT",
            default_value = "dms",
            requires = "broadcast"
        )]
        via: String,
    },
    /// Make invocation tokens for calling <behavior> from this context (chained on provide
    /// anchors, plus self-signed). Prints a token list.
    Invoke {
        /// Behavior to invoke, e.g. /dms/node/peers/list.
        behavior: String,
        #[command(flatten)]
        ctx: Ctx,
        /// Only this receiver may accept them.
        #[arg(short, long, value_name = "DID")]
        audience: Option<String>,
        /// Topic, for broadcast tokens.
        #[arg(short, long)]
        topic: Option<String>,
        /// Validity.
        #[arg(long, default_value = "5m")]
        duration: humantime::Duration,
    },
    /// Check whether tokens authorize invoking <behavior> at this context, as a node would.
    /// Exits 0 when authorized, 1 with the failing rule when denied.
    Verify {
        /// Tokens (JSON, @file, or -).
        tokens: String,
        #[command(flatten)]
        ctx: Ctx,
        /// Behavior invoked.
        #[arg(long = "cap", value_name = "BEHAVIOR")]
        behavior: String,
        /// Sender DID (default: the subject of the first token).
        #[arg(long)]
        sender: Option<String>,
        /// Broadcast topic (checks broadcast tokens).
        #[arg(short, long)]
        topic: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct Ctx {
    /// Capability context (`ledger[:<account or alias>]` for a Ledger wallet's).
    #[arg(short = 'c', long = "context", default_value = "user")]
    pub name: String,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = true)]
pub struct AnchorArgs {
    /// A DID trusted fully.
    #[arg(long, value_name = "DID")]
    root: Option<String>,
    /// Token(s) admitting chains rooted in their subject.
    #[arg(long, value_name = "TOKEN")]
    require: Option<String>,
    /// Token(s) delegated to this context, to chain on when invoking.
    #[arg(long, value_name = "TOKEN")]
    provide: Option<String>,
    /// Revocation token(s) to enforce (NuNet's `cap anchor --revoke`; the same as importing
    /// them with `nunet cap revoke`).
    #[arg(long, value_name = "TOKEN")]
    revoke: Option<String>,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Capability (repeatable), e.g. /dms/deployment.
    #[arg(long = "cap", value_name = "CAP")]
    caps: Vec<String>,
    /// Broadcast topic (repeatable), e.g. /nunet.
    #[arg(short, long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Restrict invocations to this receiver.
    #[arg(short, long, value_name = "DID")]
    audience: Option<String>,
    /// Most tokens that may be chained below this one (0 = unlimited; 1 = no further delegation).
    #[arg(short, long, default_value_t = 0)]
    depth: u64,
    /// Validity from now, e.g. 24h, 30d.
    #[arg(long, conflicts_with = "expiry")]
    duration: Option<humantime::Duration>,
    /// Expiry time, e.g. 2026-12-31 or 2026-12-31T12:00:00Z.
    #[arg(short, long)]
    expiry: Option<String>,
    /// Token format: `native`, or `nunet` for NuNet's nodes and tools (default: the
    /// context's format; `nunet` for a context NuNet's DMS wrote).
    #[arg(long, value_name = "native|nunet", value_parser = parse_format)]
    format: Option<TokenFormat>,
}

fn parse_format(s: &str) -> Result<TokenFormat, String> {
    match s {
        "native" => Ok(TokenFormat::Native),
        "nunet" => Ok(TokenFormat::NuNet),
        other => Err(format!("{other:?} is not a token format: native or nunet")),
    }
}

impl SpecArgs {
    fn build(&self, subject: &str) -> Result<TokenSpec> {
        let sub = parse_did(subject, "subject")?;
        let cap = parse_caps(&self.caps, "--cap")?;
        let topic = parse_caps(&self.topics, "--topic")?;
        if cap.is_empty() && topic.is_empty() {
            bail!("give at least one --cap or --topic");
        }
        let exp = match (&self.duration, &self.expiry) {
            (Some(d), _) => expiry_after(now_ns(), (*d).into()).context("--duration")?,
            (None, Some(e)) => parse_expiry(e)?,
            (None, None) => bail!("give --duration (e.g. 24h) or --expiry (e.g. 2026-12-31)"),
        };
        if exp <= now_ns() {
            bail!("the expiry is in the past");
        }
        let aud = self
            .audience
            .as_deref()
            .map(|a| parse_did(a, "audience"))
            .transpose()?;
        Ok(TokenSpec {
            sub,
            aud,
            cap,
            topic,
            exp,
            depth: self.depth,
        })
    }
}

fn parse_did(s: &str, what: &str) -> Result<Did> {
    s.trim().parse().with_context(|| format!("{what} {s:?}"))
}

fn parse_caps(v: &[String], flag: &str) -> Result<Vec<Capability>> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| {
            s.trim()
                .parse::<Capability>()
                .with_context(|| format!("{flag} {s:?}"))
        })
        .collect()
}

/// An expiry time: `2026-12-31`, `2026-12-31 12:00:00` or RFC 3339, as nanoseconds.
pub(crate) fn parse_expiry(s: &str) -> Result<u64> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).with_context(|| {
        format!("--expiry {s:?}: expected a date like 2026-12-31 or 2026-12-31T12:00:00Z")
    })?;
    let ns = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    u64::try_from(ns).map_err(|_| {
        anyhow::anyhow!("--expiry {s:?}: past the year 2554, the last one a token can name")
    })
}

/// Token text from an argument: JSON, `@file`, or `-` for stdin.
fn read_tokens(arg: &str) -> Result<TokenList> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading tokens from stdin")?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    } else {
        arg.to_string()
    };
    let list = TokenList::parse_any(&text)?;
    if list.tok.is_empty() {
        bail!("no token given");
    }
    Ok(list)
}

fn print_tokens(tokens: Vec<Token>) {
    if tokens.len() == 1 {
        println!("{}", serde_json::to_string(&tokens[0]).unwrap_or_default());
    } else {
        println!("{}", TokenList { tok: tokens }.to_json());
    }
}

fn time(ns: u64) -> String {
    // u64 nanoseconds end in 2554: always within what SystemTime and RFC 3339 hold.
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    let rel = if t > SystemTime::now() {
        ""
    } else {
        " (expired)"
    };
    format!("{}{rel}", humantime::format_rfc3339_seconds(t))
}

fn describe(t: &Token) -> String {
    let d = t.dms();
    let list = |v: &[Capability]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = format!(
        "{} {}  iss {}  sub {}",
        &t.id().to_string()[..12],
        d.act,
        d.iss,
        d.sub
    );
    if !d.cap.is_empty() {
        s += &format!("  cap {}", list(&d.cap));
    }
    if !d.topic.is_empty() {
        s += &format!("  topic {}", list(&d.topic));
    }
    if let Some(a) = &d.aud {
        s += &format!("  aud {a}");
    }
    if d.depth > 0 {
        s += &format!("  depth {}", d.depth);
    }
    s += &format!("  exp {}  chain {}", time(d.exp), t.links().len() - 1);
    s
}

pub fn run(home: &Home, cmd: CapCmd) -> Result<i32> {
    let contexts = home.contexts()?;
    // The file a context name stands for (`ledger:finance` is cap/finance).
    let file = |ctx: &Ctx| -> Result<String> { Ok(home.context_ref(&ctx.name)?.file) };
    match cmd {
        CapCmd::New { name, format } => {
            let r = home.context_ref(&name)?;
            if contexts.exists(&r.file) {
                bail!("capability context {:?} already exists", r.file);
            }
            let (did, default_format) = match r.ledger {
                Some(account) => (
                    nunet_did::Signer::did(&crate::ledger::open(account)?),
                    TokenFormat::NuNet,
                ),
                None => {
                    let ks = home.keystore()?;
                    let did = if ks.exists(&name) {
                        home.key_did(&name)?
                    } else {
                        let pass = passphrase(&format!("New passphrase for key {name:?}: "), true)?;
                        ks.create(&name, &pass)?.did()
                    };
                    (did, TokenFormat::Native)
                }
            };
            let mut anchors = Anchors::new(did.clone());
            anchors.token_format = format.unwrap_or(default_format);
            contexts.create(&r.file, &anchors)?;
            println!("{did}");
        }
        CapCmd::List { ctx, json } => {
            let a = contexts.load(&file(&ctx)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
                return Ok(0);
            }
            println!(
                "context {}  did {}  token format {}",
                ctx.name, a.did, a.token_format
            );
            println!("roots ({}):", a.roots.len());
            for r in &a.roots {
                println!("  {r}");
            }
            for (label, toks) in [("require", &a.require), ("provide", &a.provide)] {
                println!("{label} ({}):", toks.len());
                for t in toks.iter() {
                    println!("  {}", describe(t));
                }
            }
            println!("revocations ({}):", a.revocations.len());
            for t in a.revocations.tokens() {
                let d = t.dms();
                match d.rev {
                    Some(r) => println!("  {r} revoked by {}", d.iss),
                    // NuNet's revocations name the token by issuer, subject and nonce.
                    None => println!(
                        "  the token of nonce {} issued to {} revoked by {}",
                        d.nonce
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>(),
                        d.sub,
                        d.iss
                    ),
                }
            }
        }
        CapCmd::Anchor { ctx, anchors } => {
            let name = file(&ctx)?;
            let mut a = contexts.load(&name)?;
            let now = now_ns();
            if let Some(r) = &anchors.root {
                a.add_root(parse_did(r, "--root")?);
            }
            if let Some(t) = &anchors.require {
                for tok in read_tokens(t)?.tok {
                    a.add_require(tok, now).context("--require")?;
                }
            }
            if let Some(t) = &anchors.provide {
                for tok in read_tokens(t)?.tok {
                    a.add_provide(tok, now).context("--provide")?;
                }
            }
            if let Some(t) = &anchors.revoke {
                for tok in read_tokens(t)?.tok {
                    if tok.dms().act != Action::Revoke {
                        bail!(
                            "--revoke takes revocation tokens; to revoke a token, use `nunet cap revoke <token>`"
                        );
                    }
                    a.revocations.add(tok).context("--revoke")?;
                }
            }
            contexts.save(&name, &a)?;
        }
        CapCmd::Remove { ctx, anchors } => {
            if anchors.revoke.is_some() {
                bail!("a revocation cannot be removed: it stays until the revoked token expires");
            }
            let name = file(&ctx)?;
            let mut a = contexts.load(&name)?;
            if let Some(r) = &anchors.root {
                a.remove_root(&parse_did(r, "--root")?)?;
            }
            if let Some(t) = &anchors.require {
                for tok in read_tokens(t)?.tok {
                    a.remove_require(&tok.id())?;
                }
            }
            if let Some(t) = &anchors.provide {
                for tok in read_tokens(t)?.tok {
                    a.remove_provide(&tok.id())?;
                }
            }
            contexts.save(&name, &a)?;
        }
        CapCmd::Delegate {
            subject,
            ctx,
            spec,
            self_sign,
        } => {
            let format = spec.format;
            let spec = spec.build(&subject)?;
            let (mut a, key) = home.context_signer(&ctx.name)?;
            a.token_format = format.unwrap_or(a.token_format);
            print_tokens(a.delegate(&*key, &spec, self_sign, now_ns())?);
        }
        CapCmd::Grant { subject, ctx, spec } => {
            let format = spec.format;
            let spec = spec.build(&subject)?;
            let (mut a, key) = home.context_signer(&ctx.name)?;
            a.token_format = format.unwrap_or(a.token_format);
            print_tokens(vec![a.grant(&*key, &spec)?]);
        }
        CapCmd::Revoke {
            token,
            ctx,
            broadcast,
            via,
        } => {
            let list = read_tokens(&token)?;
            let name = file(&ctx)?;
            let mut a = contexts.load(&name)?;
            let mut out = Vec::new();
            let mut key = None;
            for tok in list.tok {
                if tok.dms().act == Action::Revoke {
                    a.revocations
                        .add(tok.clone())
                        .context("importing revocation")?;
                    out.push(tok);
                } else {
                    if key.is_none() {
                        key = Some(home.context_signer(&ctx.name)?.1);
                    }
                    if let Some(k) = &key {
                        out.push(a.revoke(&**k, &tok)?);
                    }
                }
            }
            contexts.save(&name, &a)?;
            if broadcast {
                let caller = crate::cmd::deployment::Caller::new(home, &via)?;
                let payload = serde_json::to_value(TokenList { tok: out.clone() })?;
                match caller.call(
                    nunet_node::revocations::SUBMIT,
                    &payload,
                    std::time::Duration::from_secs(30),
                )? {
                    Ok(v) => eprintln!(
                        "broadcast: {} new on this node, {} announced to the network{}",
                        v["added"],
                        v["announced"],
                        v["announce_error"]
                            .as_str()
                            .map(|e| format!(" (not announced: {e})"))
                            .unwrap_or_default()
                    ),
                    Err(code) => return Ok(code),
                }
            }
            print_tokens(out);
        }
        CapCmd::Invoke {
            behavior,
            ctx,
            audience,
            topic,
            duration,
        } => {
            let (a, key) = home.context_signer(&ctx.name)?;
            let cap = vec![
                behavior
                    .parse::<Capability>()
                    .with_context(|| format!("behavior {behavior:?}"))?,
            ];
            let topic: Vec<Capability> =
                topic.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
            let act = if topic.is_empty() {
                Action::Invoke
            } else {
                Action::Broadcast
            };
            let aud = audience
                .as_deref()
                .map(|d| parse_did(d, "--audience"))
                .transpose()?;
            let exp = expiry_after(now_ns(), duration.into()).context("--duration")?;
            let spec = TokenSpec {
                sub: a.did.clone(),
                aud,
                cap,
                topic,
                exp,
                depth: 0,
            };
            println!(
                "{}",
                TokenList {
                    tok: a.invocation_tokens(&*key, act, &spec, now_ns())
                }
                .to_json()
            );
        }
        CapCmd::Verify {
            tokens,
            ctx,
            behavior,
            sender,
            topic,
        } => {
            let list = read_tokens(&tokens)?;
            let a = contexts.load(&file(&ctx)?)?;
            let cap: Capability = behavior
                .parse()
                .with_context(|| format!("--cap {behavior:?}"))?;
            let topic: Option<Capability> = topic.map(|t| t.parse()).transpose()?;
            let sender = match sender {
                Some(s) => parse_did(&s, "--sender")?,
                None => list.tok[0].dms().sub.clone(),
            };
            let req = Request {
                action: if topic.is_some() {
                    Action::Broadcast
                } else {
                    Action::Invoke
                },
                subject: &sender,
                audience: &a.did,
                capability: &cap,
                topic: topic.as_ref(),
            };
            match Verifier::default().verify_any(&list, &req, &a, now_ns()) {
                Ok(ok) => {
                    let anchor = match ok.anchor {
                        Anchor::SelfIssued => "this context".to_string(),
                        Anchor::Root(d) => format!("root {d}"),
                        Anchor::Require(id) => format!("require anchor {id}"),
                    };
                    println!(
                        "authorized: {cap} for {sender}, anchored on {anchor}, {} token(s), until {}",
                        ok.chain_len,
                        time(ok.expires)
                    );
                }
                Err(denied) => {
                    println!("denied: {denied}");
                    return Ok(1);
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(duration: &str) -> Result<TokenSpec> {
        SpecArgs {
            caps: vec!["/dms".into()],
            topics: Vec::new(),
            audience: None,
            depth: 0,
            duration: Some(duration.parse().context("duration")?),
            expiry: None,
            format: None,
        }
        .build("did:key:z6MktojHN9D8obak7C9wjpTzCRrdE5zC6cxt5ANUFnQskgbs")
    }

    #[test]
    fn far_expiries_are_refused_not_wrapped() {
        assert!(spec("24h").is_ok());
        // 1e12 s in nanoseconds wrapped (cast to u64) to an arbitrary instant.
        let e = spec("1000000000000s").expect_err("refused");
        assert!(format!("{e:#}").contains("--duration"), "{e:#}");
        assert!(parse_expiry("2030-01-01").is_ok());
        let e = parse_expiry("2600-01-01").expect_err("refused");
        assert!(e.to_string().contains("2554"), "{e}");
    }
}
