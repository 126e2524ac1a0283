//! GitHub Actions expressions (`${{ ... }}` and `if:`), as far as rcache's
//! action and example workflow use them: context paths, string literals,
//! `true`/`false`, `==`, `!=` (case-insensitive, as GitHub compares
//! strings), `!`, `&&`, `||`, parentheses and `hashFiles(...)`. Anything
//! else, and any name the context does not know, is an error, so the action
//! cannot use what this stand-in would get wrong.

/// A value an expression yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Text(String),
}

impl Value {
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Text(text) => !text.is_empty(),
        }
    }

    /// How GitHub writes the value into a string.
    pub fn render(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Text(text) => text.clone(),
        }
    }
}

/// What names and functions mean where an expression is evaluated.
pub trait Context {
    /// The value of a dotted name such as `steps.setup.outputs.tag`; an
    /// error for a name this context does not know.
    fn lookup(&self, path: &[String]) -> Result<Value, String>;
    /// `hashFiles(patterns...)`.
    fn hash_files(&self, patterns: &[String]) -> String;
}

/// Replaces every `${{ expr }}` in `text` with its value.
pub fn substitute(text: &str, context: &dyn Context) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `${{{{` in {text:?}"))?;
        out.push_str(&evaluate(&after[..end], context)?.render());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Evaluates an `if:` condition (with or without `${{ }}`).
pub fn condition(text: &str, context: &dyn Context) -> Result<bool, String> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix("${{")
        .and_then(|t| t.strip_suffix("}}"))
        .unwrap_or(trimmed);
    Ok(evaluate(inner, context)?.truthy())
}

/// Evaluates one expression.
pub fn evaluate(text: &str, context: &dyn Context) -> Result<Value, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        context,
    };
    let value = parser.or()?;
    if parser.at != tokens.len() {
        return Err(format!("unexpected {:?} in `{text}`", tokens[parser.at]));
    }
    Ok(value)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Text(String),
    Name(Vec<String>),
    Op(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
        } else if c == '\'' {
            let mut literal = String::new();
            at += 1;
            loop {
                match chars.get(at) {
                    None => return Err(format!("unclosed string in `{text}`")),
                    Some('\'') if chars.get(at + 1) == Some(&'\'') => {
                        literal.push('\'');
                        at += 2;
                    }
                    Some('\'') => break,
                    Some(&other) => {
                        literal.push(other);
                        at += 1;
                    }
                }
            }
            at += 1;
            tokens.push(Token::Text(literal));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = at;
            while at < chars.len()
                && (chars[at].is_ascii_alphanumeric() || matches!(chars[at], '_' | '-' | '.'))
            {
                at += 1;
            }
            let name: String = chars[start..at].iter().collect();
            tokens.push(Token::Name(name.split('.').map(str::to_owned).collect()));
        } else {
            let two: String = chars[at..(at + 2).min(chars.len())].iter().collect();
            let op = ["==", "!=", "&&", "||"]
                .into_iter()
                .find(|op| *op == two)
                .or_else(|| {
                    ["(", ")", ",", "!"]
                        .into_iter()
                        .find(|op| op.starts_with(c))
                })
                .ok_or_else(|| format!("unsupported character {c:?} in `{text}`"))?;
            at += op.len();
            tokens.push(Token::Op(op));
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    context: &'a dyn Context,
}

impl Parser<'_> {
    fn eat(&mut self, op: &str) -> bool {
        let found = matches!(self.tokens.get(self.at), Some(Token::Op(next)) if *next == op);
        if found {
            self.at += 1;
        }
        found
    }

    fn or(&mut self) -> Result<Value, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = if left.truthy() { left } else { right };
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = if left.truthy() { right } else { left };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Value, String> {
        if self.eat("!") {
            return Ok(Value::Bool(!self.unary()?.truthy()));
        }
        let left = self.primary()?;
        for (op, equal) in [("==", true), ("!=", false)] {
            if self.eat(op) {
                let right = self.primary()?;
                let same = left.render().to_lowercase() == right.render().to_lowercase();
                return Ok(Value::Bool(same == equal));
            }
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Value, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or("expression ends early")?;
        self.at += 1;
        match token {
            Token::Op("(") => {
                let value = self.or()?;
                if !self.eat(")") {
                    return Err("missing `)`".into());
                }
                Ok(value)
            }
            Token::Text(text) => Ok(Value::Text(text)),
            Token::Name(path) if path == ["true"] => Ok(Value::Bool(true)),
            Token::Name(path) if path == ["false"] => Ok(Value::Bool(false)),
            Token::Name(path) if self.eat("(") => self.call(&path.join(".")),
            Token::Name(path) => self.context.lookup(&path),
            Token::Op(op) => Err(format!("unexpected `{op}`")),
        }
    }

    fn call(&mut self, function: &str) -> Result<Value, String> {
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.or()?.render());
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(format!("expected `,` or `)` in {function}(...)"));
                }
            }
        }
        match function {
            "hashFiles" => Ok(Value::Text(self.context.hash_files(&args))),
            other => Err(format!(
                "function {other}() is not supported by the stand-in"
            )),
        }
    }
}
