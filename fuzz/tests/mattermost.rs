//! A short fuzzing pass over the `mattermost` dialect: no mutated request may panic.

#[test]
fn mutated_requests_never_panic() {
    buildmaster_fuzz::smoke::<buildmaster_dialect_mattermost::Mattermost>("mattermost");
}
