mod consistency;
mod fixture;
mod materialize;
mod offline;
mod online;
mod registry;
mod security;
mod tls;
