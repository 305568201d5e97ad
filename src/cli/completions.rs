//! `losscape completions bash|zsh|fish|elvish|powershell`: the shell completion script on
//! stdout (clap_complete), e.g. `losscape completions bash > ~/.local/share/bash-completion/completions/losscape`.

use anyhow::Result;
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::command(), "losscape", &mut script);
    // a closed pipe is an io::Error (exit 0 in main), not a panic
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}
