//! How library errors name what the user set.
//!
//! A value can come from a command-line flag (`--top-k 5`) or from an analysis spec
//! (`[hessian] top_k = 5` on line 12 of `spec.toml`). The library cannot know which, so its
//! typed errors carry the *config field* (`top_k`) and their messages write it between
//! backticks: `` `top_k` must be at least 1, got 0 ``. Only the edges translate: the CLI
//! turns `` `top_k` `` into `--top-k` (the argument whose id is the field), the spec
//! reader into `spec.toml:12 hessian.top_k`. A field the edge does not know stays as
//! written, which still names it.
//!
//! Field names are the snake_case names of the config structs' fields, which are also the
//! ids of the command-line arguments that set them (the argument parser derives the id from
//! the field name and the flag from the id), so the CLI needs no hand-written table.

/// Replaces every backticked field in `message` for which `rename` returns a name.
/// Text between backticks that is not a known field (code, paths) is left alone.
pub fn translate_fields(message: &str, rename: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(len) = after.find('`') else { break };
        let name = &after[..len];
        out.push_str(&rest[..start]);
        let is_field = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
        match is_field.then(|| rename(name)).flatten() {
            Some(new) => out.push_str(&new),
            None => {
                out.push('`');
                out.push_str(name);
                out.push('`');
            }
        }
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_known_fields_only() {
        let flag = |f: &str| (f == "top_k").then(|| "--top-k".to_string());
        assert_eq!(
            translate_fields("`top_k` must be ≥ 1; see `losscape info`", flag),
            "--top-k must be ≥ 1; see `losscape info`"
        );
        assert_eq!(translate_fields("no fields", flag), "no fields");
        assert_eq!(translate_fields("odd ` tick", flag), "odd ` tick");
        assert_eq!(
            translate_fields("`top_k` and `top_k`", flag),
            "--top-k and --top-k"
        );
    }
}
