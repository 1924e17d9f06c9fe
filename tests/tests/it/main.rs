//! Cairn's integration tests, in one test binary (see `cairn_tests` for the
//! harnesses).

mod in_process;
