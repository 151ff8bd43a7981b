//! Fuzzes the `gitorious` dialect; see `buildmaster_fuzz::main`.

fn main() -> std::process::ExitCode {
    buildmaster_fuzz::main::<buildmaster_dialect_gitorious::Gitorious>("gitorious")
}
