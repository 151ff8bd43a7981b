//! A short fuzzing pass over the `bitbucketserver` dialect: no mutated request may panic.

#[test]
fn mutated_requests_never_panic() {
    buildmaster_fuzz::smoke::<buildmaster_dialect_bitbucket::BitbucketServer>("bitbucketserver");
}
