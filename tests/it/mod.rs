mod consistency;
mod fixture;
mod offline;
mod online;
mod registry;
