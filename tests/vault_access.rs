//! Identity and access against the real binary: tokens, AppRole, ACL policies, response
//! wrapping and the audit log, driven by hvac and OpenBao's `bao` CLI through the pytest files
//! `tests/python/test_access_*.py`. Every server in them writes an audit log, and each test
//! ends by checking that the log holds none of the secrets the test handled and that
//! `arca audit verify` finds its chain intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pytest::run as pytest;

#[test]
fn hvac_drives_tokens_approle_policies_wrapping_and_audit() {
    pytest("test_access_hvac.py");
}

#[test]
fn bao_cli_drives_tokens_and_policies() {
    pytest("test_access_bao_cli.py");
}

#[test]
fn audit_log_verifies_and_fails_closed() {
    pytest("test_access_audit.py");
}
