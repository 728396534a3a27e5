//! The CLI's client-side commands.

pub mod bench;
pub mod demo;
pub mod publish;
pub mod sub;
