//! Binary entry point: parse the command line and hand over to [`hyops_pve::cli`].
fn main() {
    std::process::exit(hyops_pve::cli::main_entry());
}
