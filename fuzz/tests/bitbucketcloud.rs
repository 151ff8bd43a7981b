//! A short fuzzing pass over the `bitbucketcloud` dialect: no mutated request may panic.

#[test]
fn mutated_requests_never_panic() {
    buildmaster_fuzz::smoke::<buildmaster_dialect_bitbucket::BitbucketCloud>("bitbucketcloud");
}
