//! The `margay` binary: everything lives in the library ([`margay_agent::cli`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    margay_agent::cli::main()
}
