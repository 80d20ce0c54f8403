mod consistency;
mod files;
mod fixture;
mod materialize;
mod offline;
mod online;
mod registry;
