//! A client's writes on their way into replication: the [`WriteSink`] the RESP server hands a
//! command's records to (the [`Engine`](crate::engine::Engine)'s `Sink` is one), the
//! [`ReplyTicket`] that holds the client's reply until its replication finishes, and the
//! [`ReplicationMode`] that decides whether it waits. The engine defines them so that the
//! store's side never imports the server.

use clap::ValueEnum;
use serde::Deserialize;

use crate::engine::store::Replicate;

/// When a client's write is acknowledged (`--replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// A write is acknowledged only after every live peer holds it (default).
    Sync,
    /// A write is acknowledged once stored locally.
    Async,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Sync => "sync",
            ReplicationMode::Async => "async",
        }
    }
}

/// Names a write whose reply waits for replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyTicket(pub u64);

/// Why a held write was not replicated. The local store already changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The node lost quorum before the peers acknowledged: the client gets [`ISOLATED_ERROR`](crate::resp::commands::ISOLATED_ERROR).
    Isolated,
}

/// What a client's writes go into: the [`Engine`]'s [`Sink`] (the RESP server calls it; the
/// engine defines it so that the store's side never imports the server).
pub trait WriteSink {
    /// Current unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// True while the node has no quorum: writes are refused.
    fn isolated(&self) -> bool;
    /// How many more [`RespServer::complete`](crate::resp::server::RespServer::complete) calls the loop makes right after this one (the
    /// rest of a batch of completions). While it is nonzero, completed connections are only
    /// marked, and all of them are driven (one socket write each) at the batch's last call.
    fn completions_left(&mut self) -> usize {
        0
    }
    /// Takes the records of one client command (never empty). `Some(id)` holds the client's
    /// reply until [`RespServer::complete`](crate::resp::server::RespServer::complete)`(id)`; `None` sends it now (async mode, no peers).
    fn submit(&mut self, records: Vec<Replicate>) -> Option<ReplyTicket>;
    /// Extra `name:value` lines for INFO (node id, cluster role, peers).
    fn info_extra(&self) -> String {
        String::new()
    }
}
