//! The restricted-network guide of NuNet's docs, with real `nunet` processes: an organisation
//! is the root of trust; it grants a user; the user's invocation verifies at a node that
//! anchors the organisation and is denied at a node that does not; revocation closes it.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use common::Node;

#[test]
fn restricted_network() {
    let org = Node::new();
    let user = Node::new();
    let node = Node::new(); // the user's own DMS
    let other = Node::new(); // a DMS outside the organisation's pool

    let org_did = org.run(&["cap", "new", "myorg"]).ok();
    let user_did = user.run(&["cap", "new", "user"]).ok();
    let node_did = node.run(&["cap", "new", "dms"]).ok();
    other.run(&["cap", "new", "dms"]).ok();
    assert!(org_did.starts_with("did:key:z6Mk"));
    assert_eq!(user.run(&["key", "did", "user"]).ok(), user_did);

    // 1. The organisation grants the user deployment and public behaviors.
    let grant = org
        .run(&[
            "cap",
            "grant",
            "-c",
            "myorg",
            "--cap",
            "/dms/deployment",
            "--cap",
            "/public",
            "--topic",
            "/nunet",
            "--duration",
            "2h",
            &user_did,
        ])
        .ok();
    // 2. The user keeps it as a provide anchor.
    user.run(&["cap", "anchor", "-c", "user", "--provide", &grant])
        .ok();
    // 3. The node admits the organisation's chains for those behaviors (require anchor)...
    let admit = node
        .run(&[
            "cap",
            "grant",
            "-c",
            "dms",
            "--cap",
            "/dms/deployment",
            "--cap",
            "/public",
            "--topic",
            "/nunet",
            "--duration",
            "3h",
            &org_did,
        ])
        .ok();
    node.run(&["cap", "anchor", "-c", "dms", "--require", &admit])
        .ok();
    // ...and trusts its owner fully (root anchor).
    node.run(&["cap", "anchor", "-c", "dms", "--root", &user_did])
        .ok();
    let listed = node.run(&["cap", "list", "-c", "dms"]).ok();
    assert!(
        listed.contains("require (1)") && listed.contains(&user_did),
        "{listed}"
    );

    // The user's invocation verifies at the node through the organisation.
    let inv = user
        .run(&[
            "cap",
            "invoke",
            "-c",
            "user",
            "/dms/deployment/bid",
            "--duration",
            "10m",
        ])
        .ok();
    let ok = node.run(&[
        "cap",
        "verify",
        "-c",
        "dms",
        "--cap",
        "/dms/deployment/bid",
        &inv,
    ]);
    assert_eq!(ok.code, 0, "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("authorized"), "{}", ok.stdout);
    // A node that does not anchor the organisation denies, naming the rule.
    let denied = other.run(&[
        "cap",
        "verify",
        "-c",
        "dms",
        "--cap",
        "/dms/deployment/bid",
        &inv,
    ]);
    assert_eq!(denied.code, 1);
    assert!(denied.stdout.contains("not-anchored"), "{}", denied.stdout);
    // Outside the granted capabilities: denied at the node too.
    let inv2 = user
        .run(&[
            "cap",
            "invoke",
            "-c",
            "user",
            "/dms/node/onboarding/onboard",
            "--duration",
            "10m",
        ])
        .ok();
    let d2 = node.run(&[
        "cap",
        "verify",
        "-c",
        "dms",
        "--cap",
        "/dms/node/onboarding/onboard",
        "--sender",
        &user_did,
        &inv2,
    ]);
    // The self-signed token is accepted (the user is the node's root); the org chain is not needed.
    assert_eq!(d2.code, 0, "{}", d2.stdout);
    let d3 = other.run(&[
        "cap",
        "verify",
        "-c",
        "dms",
        "--cap",
        "/dms/node/onboarding/onboard",
        &inv2,
    ]);
    assert_eq!(d3.code, 1);

    // Audience: tokens for the node are refused by another receiver.
    let for_node = user
        .run(&[
            "cap",
            "invoke",
            "-c",
            "user",
            "/public/hello",
            "-a",
            &node_did,
        ])
        .ok();
    assert_eq!(
        node.run(&[
            "cap",
            "verify",
            "-c",
            "dms",
            "--cap",
            "/public/hello",
            &for_node
        ])
        .code,
        0
    );

    // The user delegates to a second DMS of theirs (chained on the org's grant), which can then
    // invoke at the node: a 3-token chain anchored on the require anchor.
    let dms2 = Node::new();
    let dms2_did = dms2.run(&["cap", "new", "dms"]).ok();
    let deleg = user
        .run(&[
            "cap",
            "delegate",
            "-c",
            "user",
            "--cap",
            "/dms/deployment",
            "--duration",
            "1h",
            &dms2_did,
        ])
        .ok();
    dms2.run(&["cap", "anchor", "-c", "dms", "--provide", &deleg])
        .ok();
    let inv3 = dms2
        .run(&["cap", "invoke", "-c", "dms", "/dms/deployment/commit"])
        .ok();
    let v3 = node
        .run(&[
            "cap",
            "verify",
            "-c",
            "dms",
            "--cap",
            "/dms/deployment/commit",
            &inv3,
        ])
        .ok();
    assert!(
        v3.contains("require anchor") && v3.contains("3 token(s)"),
        "{v3}"
    );
    // Delegating beyond the grant fails with a clear error.
    let wide = user.run(&[
        "cap",
        "delegate",
        "-c",
        "user",
        "--cap",
        "/dms/node",
        "--duration",
        "1h",
        &dms2_did,
    ]);
    assert_eq!(wide.code, 1);
    assert!(wide.stderr.contains("no provide anchor"), "{}", wide.stderr);

    // The organisation revokes its grant; the node imports the revocation; the chain is denied.
    let rev = org.run(&["cap", "revoke", "-c", "myorg", &grant]).ok();
    node.run(&["cap", "revoke", "-c", "dms", &rev]).ok();
    let after = node.run(&[
        "cap",
        "verify",
        "-c",
        "dms",
        "--cap",
        "/dms/deployment/commit",
        &inv3,
    ]);
    assert_eq!(after.code, 1);
    assert!(after.stdout.contains("revoked"), "{}", after.stdout);
    assert!(
        node.run(&["cap", "list", "-c", "dms"])
            .ok()
            .contains("revocations (1)")
    );
}
