//! `$(VAR)` expansion as the kubelet applies it to commands, arguments,
//! environment values and subPathExpr.

/// Expands `$(NAME)` references in `input` with `lookup`: `$$` is a literal
/// `$`, a reference `lookup` does not know stays as written, and an
/// unterminated `$(` is kept as is.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let Some(next) = after.chars().next() else {
            // a trailing '$' is kept
            out.push('$');
            rest = after;
            break;
        };
        match next {
            '$' => {
                out.push('$');
                rest = &after[1..];
            }
            '(' => match after[1..].find(')') {
                Some(end) => {
                    let name = &after[1..1 + end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            c => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn look(name: &str) -> Option<String> {
        match name {
            "A" => Some("x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_rules() {
        assert_eq!(expand("$(A)-$(A)", look), "x-x");
        assert_eq!(expand("$$(A)", look), "$(A)");
        assert_eq!(expand("$(B)", look), "$(B)");
        assert_eq!(expand("$(EMPTY)z", look), "z");
        assert_eq!(expand("a$", look), "a$");
        assert_eq!(expand("$(A", look), "$(A");
        assert_eq!(expand("$A", look), "$A");
        assert_eq!(expand("$$$$", look), "$$");
        assert_eq!(expand("é$é", look), "é$é");
    }
}
