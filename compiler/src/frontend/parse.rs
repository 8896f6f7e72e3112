//! Tokens to syntax tree, with `syn`.
//!
//! The grammar (DESIGN in `ARCHITECTURE.md` shows a whole model):
//!
//! ```text
//! model    := doc* 'model' Ident '{' item* '}'
//! item     := 'dims' (Ident ('=' Int)?),+ ';' | 'dim' Ident '=' dim ';' | 'input' Ident ':' type ';'
//!           | 'fn' Ident '(' Ident,* ')' block | stmt
//! stmt     := 'let' Ident '=' expr ';' | Ident '=' expr ';' | 'loss' expr ';' | 'output' Ident ';'
//!           | 'param' path ':' type ('=' init)? ('as' (Ident | Str))? ';'
//!           | 'for' Ident 'in' 0 '..' dim block
//! type     := 'index'? '[' dim,* ']'
//! expr     := expr ('+' | '-' | '*' | '/' | '@') expr | '-' expr | expr '.T'
//!           | expr '[' expr ']' | Ident '(' (expr | Ident '=' expr),* ')' | path | number
//!           | '[' dim,* ']' | '(' expr ')'
//! ```
//!
//! `*`, `/` and `@` bind tighter than `+` and `-`, all left-associative, as in Python.
//! A syntax error inside one item does not hide errors in the next: the parser skips
//! to the item's end and goes on, so one expansion reports every mistake.

use proc_macro2::{Delimiter, TokenTree};
use syn::parse::{ParseStream, Parser};
use syn::{Ident, Token, braced, bracketed, parenthesized};

use super::ast::*;

mod kw {
    syn::custom_keyword!(model);
    syn::custom_keyword!(dims);
    syn::custom_keyword!(dim);
    syn::custom_keyword!(input);
    syn::custom_keyword!(param);
    syn::custom_keyword!(index);
    syn::custom_keyword!(loss);
    syn::custom_keyword!(output);
    syn::custom_keyword!(normal);
    syn::custom_keyword!(zeros);
    syn::custom_keyword!(ones);
}

/// Parses a model; on failure, every syntax error found.
pub fn parse_model(tokens: proc_macro2::TokenStream) -> Result<Model, Vec<syn::Error>> {
    let mut errors = Vec::new();
    let parsed = (|input: ParseStream| model(input, &mut errors)).parse2(tokens);
    match parsed {
        Ok(m) if errors.is_empty() => Ok(m),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

fn model(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Model> {
    let docs = input.call(syn::Attribute::parse_outer)?;
    input.parse::<kw::model>()?;
    let name: Ident = input.parse()?;
    let body;
    braced!(body in input);
    let items = recovering(&body, errors, item);
    if !input.is_empty() {
        return Err(input.error("unexpected tokens after the model's closing brace"));
    }
    Ok(Model { docs, name, items })
}

/// Parses `one` repeatedly until `input` is empty; a failed parse is recorded and the
/// tokens up to the next `;` (or a `{ }` block) are skipped.
fn recovering<T>(
    input: ParseStream,
    errors: &mut Vec<syn::Error>,
    one: fn(ParseStream, &mut Vec<syn::Error>) -> syn::Result<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let fork = input.fork();
        match one(&fork, errors) {
            Ok(x) => {
                syn::parse::discouraged::Speculative::advance_to(input, &fork);
                out.push(x);
            }
            Err(e) => {
                errors.push(e);
                skip_to_end(input);
            }
        }
    }
    out
}

fn skip_to_end(input: ParseStream) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            match tt {
                TokenTree::Punct(p) if p.as_char() == ';' => break,
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                _ => {}
            }
        }
        Ok(((), rest))
    });
}

fn item(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Item> {
    if input.peek(kw::dims) {
        input.parse::<kw::dims>()?;
        let mut names = Vec::new();
        loop {
            let name: Ident = input.parse()?;
            let size = if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                Some(input.parse::<syn::LitInt>()?)
            } else {
                None
            };
            names.push((name, size));
            if !input.peek(Token![,]) {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        input.parse::<Token![;]>()?;
        return Ok(Item::Dims(names));
    }
    if input.peek(kw::dim) {
        input.parse::<kw::dim>()?;
        let name = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = dim_expr(input)?;
        input.parse::<Token![;]>()?;
        return Ok(Item::DimAlias { name, value });
    }
    if input.peek(kw::input) {
        input.parse::<kw::input>()?;
        let name = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty = type_expr(input)?;
        input.parse::<Token![;]>()?;
        return Ok(Item::Input { name, ty });
    }
    if input.peek(Token![fn]) {
        input.parse::<Token![fn]>()?;
        let name = input.parse()?;
        let args;
        parenthesized!(args in input);
        let args = syn::punctuated::Punctuated::<Ident, Token![,]>::parse_terminated(&args)?;
        let body = block(input, errors)?;
        return Ok(Item::Fn(FnDef { name, args: args.into_iter().collect(), body }));
    }
    Ok(Item::Stmt(stmt(input, errors)?))
}

fn block(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Block> {
    let body;
    braced!(body in input);
    let mut stmts = Vec::new();
    let mut tail = None;
    while !body.is_empty() {
        if starts_stmt(&body) {
            let fork = body.fork();
            match stmt(&fork, errors) {
                Ok(s) => {
                    syn::parse::discouraged::Speculative::advance_to(&body, &fork);
                    stmts.push(s);
                }
                Err(e) => {
                    errors.push(e);
                    skip_to_end(&body);
                }
            }
        } else {
            let e = expr(&body)?;
            if body.is_empty() {
                tail = Some(e);
            } else {
                return Err(body.error("expected `;` or the end of the block after this expression"));
            }
        }
    }
    Ok(Block { stmts, tail })
}

fn starts_stmt(input: ParseStream) -> bool {
    input.peek(Token![let])
        || input.peek(kw::param)
        || input.peek(Token![for])
        || input.peek(kw::loss)
        || (input.peek(kw::output) && input.peek2(Ident))
        || (input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]))
}

fn stmt(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Stmt> {
    if input.peek(Token![let]) {
        input.parse::<Token![let]>()?;
        let name = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = expr(input)?;
        input.parse::<Token![;]>()?;
        return Ok(Stmt::Let { name, value });
    }
    if input.peek(kw::param) {
        return Ok(Stmt::Param(param_decl(input)?));
    }
    if input.peek(Token![for]) {
        let start = input.parse::<Token![for]>()?.span;
        let var = input.parse()?;
        input.parse::<Token![in]>()?;
        let zero: syn::LitInt = input.parse()?;
        if zero.base10_parse::<u64>()? != 0 {
            return Err(syn::Error::new(zero.span(), "a repeated block counts from 0: write `0..L`"));
        }
        input.parse::<Token![..]>()?;
        let count = dim_expr(input)?;
        let end = input.cursor().span();
        let body = block(input, errors)?;
        return Ok(Stmt::For { var, count, body, range: Range { start, end } });
    }
    if input.peek(kw::loss) {
        let start = input.parse::<kw::loss>()?.span;
        let value = expr(input)?;
        let range = Range { start, end: value.range.end };
        input.parse::<Token![;]>()?;
        return Ok(Stmt::Loss { value, range });
    }
    if input.peek(kw::output) && input.peek2(Ident) {
        let start = input.parse::<kw::output>()?.span;
        let value = expr(input)?;
        let range = Range { start, end: value.range.end };
        input.parse::<Token![;]>()?;
        return Ok(Stmt::Output { value, range });
    }
    if input.peek(Ident) && input.peek2(Token![=]) {
        let name = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = expr(input)?;
        input.parse::<Token![;]>()?;
        return Ok(Stmt::Assign { name, value });
    }
    Err(input.error("expected `let`, `param`, `for`, `output`, `loss` or an assignment"))
}

fn param_decl(input: ParseStream) -> syn::Result<ParamDecl> {
    let start = input.parse::<kw::param>()?.span;
    let mut path = vec![input.parse::<Ident>()?];
    while input.peek(Token![.]) {
        input.parse::<Token![.]>()?;
        path.push(input.parse()?);
    }
    input.parse::<Token![:]>()?;
    let ty = type_expr(input)?;
    let init = if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Some(init(input)?)
    } else {
        None
    };
    let display = if input.peek(Token![as]) {
        input.parse::<Token![as]>()?;
        if input.peek(syn::LitStr) {
            Some(input.parse::<syn::LitStr>()?.value())
        } else {
            Some(input.parse::<Ident>()?.to_string())
        }
    } else {
        None
    };
    let end = input.parse::<Token![;]>()?.span;
    Ok(ParamDecl { path, ty, init, display, range: Range { start, end } })
}

/// `normal(σ)`, `c + normal(σ)`, `zeros`, `ones`.
fn init(input: ParseStream) -> syn::Result<(Init, Range)> {
    let start = input.cursor().span();
    let mut offset = 0.0;
    if input.peek(syn::LitFloat) || input.peek(syn::LitInt) {
        offset = number(input)?.0;
        input.parse::<Token![+]>()?;
    }
    let (init, end) = if input.peek(kw::zeros) {
        let s = input.parse::<kw::zeros>()?.span;
        (Init::Normal { offset, std: 0.0 }, s)
    } else if input.peek(kw::ones) {
        let s = input.parse::<kw::ones>()?.span;
        (Init::Normal { offset: offset + 1.0, std: 0.0 }, s)
    } else if input.peek(kw::normal) {
        input.parse::<kw::normal>()?;
        let arg;
        let paren = parenthesized!(arg in input);
        let (std, _) = number(&arg)?;
        (Init::Normal { offset, std }, paren.span.close())
    } else {
        return Err(input.error("expected an initialiser: `zeros`, `ones`, `normal(σ)` or `c + normal(σ)`"));
    };
    Ok((init, Range { start, end }))
}

fn number(input: ParseStream) -> syn::Result<(f64, proc_macro2::Span)> {
    if input.peek(syn::LitFloat) {
        let lit: syn::LitFloat = input.parse()?;
        Ok((lit.base10_parse()?, lit.span()))
    } else {
        let lit: syn::LitInt = input.parse()?;
        Ok((lit.base10_parse::<f64>()?, lit.span()))
    }
}

fn type_expr(input: ParseStream) -> syn::Result<TypeExpr> {
    let start = input.cursor().span();
    let index = input.peek(kw::index);
    if index {
        input.parse::<kw::index>()?;
    }
    let (dims, close) = dim_list(input)?;
    Ok(TypeExpr { index, dims, range: Range { start, end: close } })
}

fn dim_list(input: ParseStream) -> syn::Result<(Vec<DimExpr>, proc_macro2::Span)> {
    let inner;
    let bracket = bracketed!(inner in input);
    let mut dims = Vec::new();
    while !inner.is_empty() {
        dims.push(dim_expr(&inner)?);
        if !inner.is_empty() {
            inner.parse::<Token![,]>()?;
        }
    }
    Ok((dims, bracket.span.close()))
}

/// Dimension arithmetic: `*`/`/` before `+`/`-`.
fn dim_expr(input: ParseStream) -> syn::Result<DimExpr> {
    let mut lhs = dim_term(input)?;
    while input.peek(Token![+]) || input.peek(Token![-]) {
        let op = if input.parse::<Option<Token![+]>>()?.is_some() {
            '+'
        } else {
            input.parse::<Token![-]>()?;
            '-'
        };
        lhs = DimExpr::Bin(Box::new(lhs), op, Box::new(dim_term(input)?));
    }
    Ok(lhs)
}

fn dim_term(input: ParseStream) -> syn::Result<DimExpr> {
    let mut lhs = dim_atom(input)?;
    while input.peek(Token![*]) || input.peek(Token![/]) {
        let op = if input.parse::<Option<Token![*]>>()?.is_some() {
            '*'
        } else {
            input.parse::<Token![/]>()?;
            '/'
        };
        lhs = DimExpr::Bin(Box::new(lhs), op, Box::new(dim_atom(input)?));
    }
    Ok(lhs)
}

fn dim_atom(input: ParseStream) -> syn::Result<DimExpr> {
    if input.peek(syn::token::Paren) {
        let inner;
        parenthesized!(inner in input);
        let d = dim_expr(&inner)?;
        if !inner.is_empty() {
            return Err(inner.error("expected `)`"));
        }
        return Ok(d);
    }
    if input.peek(syn::LitInt) {
        let lit: syn::LitInt = input.parse()?;
        return Ok(DimExpr::Lit(lit.base10_parse()?, lit.span()));
    }
    if input.peek(Ident) {
        return Ok(DimExpr::Sym(input.parse()?));
    }
    Err(input.error("expected a dimension: a name such as `D` or a whole number"))
}

fn binop(input: ParseStream) -> Option<(BinOp, u8)> {
    if input.peek(Token![+]) && !input.peek(Token![+=]) {
        Some((BinOp::Add, 1))
    } else if input.peek(Token![-]) && !input.peek(Token![-=]) && !input.peek(Token![->]) {
        Some((BinOp::Sub, 1))
    } else if input.peek(Token![*]) && !input.peek(Token![*=]) {
        Some((BinOp::Mul, 2))
    } else if input.peek(Token![/]) && !input.peek(Token![/=]) {
        Some((BinOp::Div, 2))
    } else if input.peek(Token![@]) {
        Some((BinOp::Matmul, 2))
    } else {
        None
    }
}

pub(super) fn expr(input: ParseStream) -> syn::Result<Expr> {
    binary(input, 1)
}

/// Precedence climbing over the binary operators.
fn binary(input: ParseStream, min_prec: u8) -> syn::Result<Expr> {
    let mut lhs = unary(input)?;
    while let Some((op, prec)) = binop(input) {
        if prec < min_prec {
            break;
        }
        let _: proc_macro2::TokenTree = input.parse()?;
        let rhs = binary(input, prec + 1)?;
        let range = lhs.range.to(rhs.range);
        lhs = Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, range };
    }
    Ok(lhs)
}

fn unary(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(Token![-]) {
        let start = input.parse::<Token![-]>()?.span;
        let inner = unary(input)?;
        let range = Range { start, end: inner.range.end };
        return Ok(Expr { kind: ExprKind::Neg(Box::new(inner)), range });
    }
    postfix(input)
}

fn postfix(input: ParseStream) -> syn::Result<Expr> {
    let mut e = primary(input)?;
    loop {
        if input.peek(syn::token::Bracket) {
            let inner;
            let bracket = bracketed!(inner in input);
            let index = expr(&inner)?;
            if !inner.is_empty() {
                return Err(inner.error("expected `]`: a lookup takes one index tensor"));
            }
            let range = Range { start: e.range.start, end: bracket.span.close() };
            e = Expr { kind: ExprKind::Lookup { table: Box::new(e), index: Box::new(index) }, range };
        } else if input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            let t: Ident = input.parse()?;
            if t != "T" {
                return Err(syn::Error::new(t.span(), "expected `.T` (transpose) after an expression"));
            }
            let range = Range { start: e.range.start, end: t.span() };
            e = Expr { kind: ExprKind::Transpose(Box::new(e)), range };
        } else {
            return Ok(e);
        }
    }
}

fn primary(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(syn::LitFloat) || input.peek(syn::LitInt) {
        let (v, span) = number(input)?;
        return Ok(Expr { kind: ExprKind::Num(v), range: Range::one(span) });
    }
    if input.peek(syn::token::Paren) {
        let inner;
        let paren = parenthesized!(inner in input);
        let mut e = expr(&inner)?;
        if !inner.is_empty() {
            return Err(inner.error("expected `)`"));
        }
        e.range = Range { start: paren.span.open(), end: paren.span.close() };
        return Ok(e);
    }
    if input.peek(syn::token::Bracket) {
        let start = input.cursor().span();
        let (dims, end) = dim_list(input)?;
        return Ok(Expr { kind: ExprKind::Shape(dims), range: Range { start, end } });
    }
    let first: Ident = input.parse()?;
    if input.peek(syn::token::Paren) {
        let inner;
        let paren = parenthesized!(inner in input);
        let (mut args, mut kwargs) = (Vec::new(), Vec::new());
        while !inner.is_empty() {
            if inner.peek(Ident) && inner.peek2(Token![=]) {
                let key: Ident = inner.parse()?;
                inner.parse::<Token![=]>()?;
                kwargs.push((key, expr(&inner)?));
            } else {
                if !kwargs.is_empty() {
                    return Err(inner.error("positional arguments come before named ones"));
                }
                args.push(expr(&inner)?);
            }
            if !inner.is_empty() {
                inner.parse::<Token![,]>()?;
            }
        }
        let range = Range { start: first.span(), end: paren.span.close() };
        return Ok(Expr { kind: ExprKind::Call { func: first, args, kwargs }, range });
    }
    let mut path = vec![first];
    // `a.b.c`, but leave `.T` after a full path to `postfix` only when it cannot be a
    // name: lowering decides between the parameter `x.T` and the transpose of `x`.
    while input.peek(Token![.]) && input.peek2(Ident) {
        input.parse::<Token![.]>()?;
        path.push(input.parse()?);
    }
    let range = Range { start: path[0].span(), end: path[path.len() - 1].span() };
    Ok(Expr { kind: ExprKind::Path(path), range })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Path(p) => p.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("."),
            ExprKind::Num(v) => v.to_string(),
            ExprKind::Binary { op, lhs, rhs } => format!("({} {op:?} {})", shape(lhs), shape(rhs)),
            ExprKind::Neg(x) => format!("-{}", shape(x)),
            ExprKind::Transpose(x) => format!("{}ᵀ", shape(x)),
            ExprKind::Lookup { table, index } => format!("{}[{}]", shape(table), shape(index)),
            ExprKind::Call { func, args, .. } => {
                format!("{func}({})", args.iter().map(shape).collect::<Vec<_>>().join(", "))
            }
            ExprKind::Shape(d) => format!("[{}]", d.len()),
        }
    }

    fn parse(text: &str) -> String {
        shape(&(|input: ParseStream| expr(input)).parse_str(text).unwrap())
    }

    #[test]
    fn precedence_and_postfix() {
        assert_eq!(parse("x @ w + b * 2"), "((x Matmul w) Add (b Mul 2))");
        assert_eq!(parse("a - b - c"), "((a Sub b) Sub c)");
        assert_eq!(parse("-x @ w.T"), "(-x Matmul w.T)");
        assert_eq!(parse("(q @ k).T / 2"), "((q Matmul k)ᵀ Div 2)");
        assert_eq!(parse("wte[tokens] + f(x, [N, D])"), "(wte[tokens] Add f(x, [2]))");
    }
}
