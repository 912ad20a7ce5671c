//! The `chaos` binary: parse the command line, run the command on a tokio runtime, print
//! the error chain on failure, exit with DESIGN.md's code (0 pass, 1 verdict failed,
//! 2 usage or invalid scenario, 3 infrastructure). clap's own usage errors exit 2 too.

use std::process::ExitCode;

mod cli;

use chaos::error::exit;
use cli::Cli;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INFRA);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(err.exit_code())
        }
    }
}
