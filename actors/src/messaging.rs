//! Messaging: what agents send each other and publish on topics.
//!
//! `topics` is pure pattern matching; mailboxes, delivery and dead letters move here from
//! `service/messages.rs`.

pub mod topics;
