//! The technician's operations on a hub: enrol it ([`setup`]), check it ([`doctor`]), see how it is
//! doing beside the running daemon ([`status`]), leave the install report ([`commission`]), carry
//! the data away ([`export`]) and decommission it ([`wipe`]). The radio half of a visit (scan, pair,
//! unpair) is [`crate::ble::tech`]; the commands are `crate::cli`'s.

pub mod apt;
pub mod commission;
pub mod doctor;
pub mod export;
pub mod held;
pub mod setup;
pub mod status;
pub mod update;
pub mod wipe;
