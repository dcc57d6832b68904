//! The checks, one folder each.

pub mod egress;
pub mod hygiene;
pub mod identity;
