//! Checks, one folder each (the layout of issue 9). Only the JWT check lives here so far.

pub mod jwt;
