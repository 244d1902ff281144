//! # borealis-wire: how Borealis services talk
//!
//! Every service-to-service conversation (compute host → safekeepers, pageserver → safekeepers,
//! safekeeper → peers, compute host → pageserver) is a TCP connection carrying **frames**. A
//! frame is a fixed 16-byte header (magic, version, payload length, CRC32C of the payload) and a
//! payload: one [`Envelope`], encoded with `postcard`. Redo records travel inside envelopes in
//! their own CRC-protected encoding ([`borealis_core::redo`]), so a record is checked twice on
//! the wire and once more on disk. The format is drawn in `docs/formats/wire-frame.md`.
//!
//! Connections are **pipelined**: a client may send many requests before the first answer; each
//! answer carries the `request_id` of its request. A request id of 0 marks an unsolicited
//! message (a safekeeper's acknowledgement of appended records). [`client::Client`] implements the
//! client side; servers use [`frame::read_frame`] and [`frame::write_frame`] directly.
//!
//! Anything read from a socket is validated and turned into a [`WireError`], never unwrapped.

pub mod client;
pub mod frame;
pub mod message;

pub use client::Client;
pub use frame::{read_frame, write_frame, WireError, FRAME_BYTES_MAX};
pub use message::{
    Body, Envelope, LsnEntry, PageAnswer, SegmentState, SegmentSummary, PAGES_PER_BATCH_MAX,
};
