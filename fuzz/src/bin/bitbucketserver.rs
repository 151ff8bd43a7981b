//! Fuzzes the `bitbucketserver` dialect; see `buildmaster_fuzz::main`.

fn main() -> std::process::ExitCode {
    buildmaster_fuzz::main::<buildmaster_dialect_bitbucket::BitbucketServer>("bitbucketserver")
}
