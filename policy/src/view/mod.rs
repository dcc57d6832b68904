//! What the filter (or `meshguard eval`) knows about one request or connection.

pub mod connection;
pub mod request;
