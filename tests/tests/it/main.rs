//! Cairn's integration tests, in one test binary (see `cairn_tests` for the
//! harnesses).

mod bad_input;
mod commands;
mod forwarding;
mod in_process;
mod log_truncation;
mod membership;
mod process_cluster;
mod projections;
mod read_all;
mod retention;
mod snapshots;
