//! One module per group of subcommands.

pub mod export;
pub mod online;
pub mod quickstart;
pub mod registry;
pub mod serve;
