//! Access policies, verified identities and usage metrics against the real binary, driven by
//! boto3, hvac and plain HTTP through the pytest files in `tests/python/`: access keys with
//! bound identities, tokens with identity metadata, AppRole logins, Vault tokens on the AWS
//! API. Every server in them writes an audit log, and each test ends by checking that the log
//! holds none of the secrets the test handled and that its hash chain verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pytest::run as pytest;

#[test]
fn identities_are_bound_to_credentials_and_tokens_work_on_the_aws_api() {
    pytest("test_identity_aws.py");
}

#[test]
fn access_policies_decide_with_real_identities_and_metrics_count_the_audit_log() {
    pytest("test_secrets_access.py");
}
