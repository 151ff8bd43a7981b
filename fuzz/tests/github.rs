//! A short fuzzing pass over the `github` dialect: no mutated request may panic.

#[test]
fn mutated_requests_never_panic() {
    buildmaster_fuzz::smoke::<buildmaster_dialect_github::GitHub>("github");
}
