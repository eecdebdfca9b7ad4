//! Shell completions and man pages, generated from the command-line
//! definition itself so that what a package ships always matches what the
//! binary accepts (`cargo xtask dist` calls these).

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for, e.g. `safd completions bash >
    /// /etc/bash_completion.d/safd`.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// Directory to write `safd.1` and one `safd-COMMAND.1` per command into
    /// (created if missing).
    dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> ExitCode {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "safd", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn man_pages(args: ManPagesArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
