//! Who is who in the DMS: ed25519 key pairs, their `did:key` identifiers, the libp2p
//! [`PeerId`](libp2p_identity::PeerId) of the same key, and the encrypted on-disk keystore.
//! DIDs of NuNet's other key types (secp256k1, Ethereum keys in Ledger wallets) are parsed and
//! their signatures verified; signing with a key held outside the node goes through
//! [`signer`].
//!
//! A node's DID and its libp2p peer id are two spellings of one public key, so converting
//! between them is a pure function ([`Did::peer_id`], [`Did::from_peer_id`]).
//!
//! This crate must not know about capabilities, messages or the network: it only names
//! identities, signs bytes and keeps secret keys safe at rest.

/// `did:key` identifiers (base58btc multibase; ed25519, secp256k1 and Ethereum keys).
pub mod did;
/// ed25519 key pairs, public keys and signatures.
pub mod key;
pub mod keystore;
pub mod keystore_v3;
pub mod secp;
pub mod signer;

pub use did::{Did, DidError, KeyKind, MAX_DID_LEN};
pub use key::{KeyError, Keypair, PublicKey, Signature};
pub use keystore::{KdfParams, KeyFormat, KeyInfo, Keystore, KeystoreError};
pub use secp::{SecpKeypair, SecpPublicKey};
pub use signer::{ExternalSigner, Signer, SignerError};
