//! Integration tests of the scheduler through its public API: traces that read as data, API
//! error cases, and property / randomized tests against a fake executor.

mod api;
mod groups;
mod harness;
mod properties;
mod speculative;
mod traces;
