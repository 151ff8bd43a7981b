//! Fuzzes the `bitbucketcloud` dialect; see `buildmaster_fuzz::main`.

fn main() -> std::process::ExitCode {
    buildmaster_fuzz::main::<buildmaster_dialect_bitbucket::BitbucketCloud>("bitbucketcloud")
}
