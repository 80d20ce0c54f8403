//! One module per group of subcommands.

pub(crate) mod backup;
pub(crate) mod delivery;
pub(crate) mod export;
pub(crate) mod file_roots;
pub(crate) mod limits;
pub(crate) mod monitor;
mod monitor_format;
pub(crate) mod online;
pub(crate) mod quickstart;
pub(crate) mod registry;
pub(crate) mod serve;
pub(crate) mod serve_log;
pub(crate) mod serve_security;
pub(crate) mod skew;
pub(crate) mod token;
pub(crate) mod upload;
