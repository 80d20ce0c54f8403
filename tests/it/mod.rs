mod consistency;
mod fixture;
mod limits;
mod materialize;
mod offline;
mod online;
mod registry;
