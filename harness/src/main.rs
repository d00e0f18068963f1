fn main() {
    std::process::exit(teardown::cli::main());
}
