//! The `syncjournal` command line.
fn main() {
    eprintln!("syncjournal: the command line arrives with issue 4");
    std::process::exit(2);
}
