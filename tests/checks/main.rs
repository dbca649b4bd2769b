//! Checks that need no running service: the shape of the source tree and the files we ship.

mod config_reference;
mod deploy;
mod layers;
