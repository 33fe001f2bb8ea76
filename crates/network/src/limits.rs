//! The memory side of [`NetLimits`](crate::NetLimits): libp2p's memory-connection-limits
//! behaviour, consulted for inbound connections only.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    memory_connection_limits,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

/// Refuses new inbound connections while the process's resident memory is over the budget.
///
/// libp2p's behaviour refuses outbound connections too; here they always pass, because they
/// are the node's own work (answering a deployment, reaching a bootstrap peer) and the
/// connection limits already bound them.
pub(crate) struct InboundMemoryLimit(Option<memory_connection_limits::Behaviour>);

impl InboundMemoryLimit {
    /// `None`: no limit.
    pub(crate) fn new(max_bytes: Option<u64>) -> Self {
        Self(max_bytes.map(|b| {
            memory_connection_limits::Behaviour::with_max_bytes(
                usize::try_from(b).unwrap_or(usize::MAX),
            )
        }))
    }
}

impl NetworkBehaviour for InboundMemoryLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match &mut self.0 {
            Some(limit) => limit.handle_pending_inbound_connection(id, local, remote),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
