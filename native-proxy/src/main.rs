//! The `underpass` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    underpass::main()
}
