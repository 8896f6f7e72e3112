//! The DSL's syntax tree: what `model! { ... }` says, with the source span of every
//! piece so lowering can point an error at the offending tokens.
//!
//! Nothing here is checked yet: names may be unknown and shapes may not fit. `parse`
//! builds it, `lower` checks and turns it into IR.

use proc_macro2::Span;
use syn::Ident;

/// A source range: the first and last token of a construct.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub start: Span,
    pub end: Span,
}

impl Range {
    pub fn one(span: Span) -> Range {
        Range { start: span, end: span }
    }
    pub fn to(self, other: Range) -> Range {
        Range { start: self.start, end: other.end }
    }
}

/// A whole `model Name { ... }`.
pub struct Model {
    /// `///` docs written before `model`, passed to the generated module.
    pub docs: Vec<syn::Attribute>,
    pub name: Ident,
    pub items: Vec<Item>,
}

pub enum Item {
    /// `dims B, T, D;`: dimension symbols.
    /// `dims B, T = 128, D;`: symbols, each with an optional representative size (what
    /// the simplifier's cost model assumes).
    Dims(Vec<(Ident, Option<syn::LitInt>)>),
    /// `dim N = B * T;`: a derived dimension, printed under its own name.
    DimAlias { name: Ident, value: DimExpr },
    /// `input tokens: index[B, T];`
    Input { name: Ident, ty: TypeExpr },
    /// `fn name(args) { ... }`: a user-defined block.
    Fn(FnDef),
    /// A statement of the model body (`let`, `param`, `for`, `output`, `loss`).
    Stmt(Stmt),
}

/// `index[B, T]` or `[N, D]`.
pub struct TypeExpr {
    pub index: bool,
    pub dims: Vec<DimExpr>,
    pub range: Range,
}

/// A dimension expression: symbols and integers with `+ - * /`.
pub enum DimExpr {
    Sym(Ident),
    Lit(i64, Span),
    Bin(Box<DimExpr>, char, Box<DimExpr>),
}

impl DimExpr {
    pub fn range(&self) -> Range {
        match self {
            DimExpr::Sym(i) => Range::one(i.span()),
            DimExpr::Lit(_, s) => Range::one(*s),
            DimExpr::Bin(a, _, b) => a.range().to(b.range()),
        }
    }
}

/// How a parameter is initialised.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// `offset + std · N(0, 1)` per element; `zeros` and `ones` have `std = 0`.
    Normal { offset: f64, std: f64 },
}

/// `param attn.wq: [D, D] = normal(0.02) as W_q;`
pub struct ParamDecl {
    /// Dotted path, e.g. `ln1.g`.
    pub path: Vec<Ident>,
    pub ty: TypeExpr,
    pub init: Option<(Init, Range)>,
    /// The name the formulas print (`W_q`); the path by default.
    pub display: Option<String>,
    pub range: Range,
}

impl ParamDecl {
    pub fn dotted(&self) -> String {
        self.path.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(".")
    }
}

pub struct FnDef {
    pub name: Ident,
    pub args: Vec<Ident>,
    pub body: Block,
}

/// Statements and an optional final expression (a function's result).
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub tail: Option<Expr>,
}

pub enum Stmt {
    Let {
        name: Ident,
        value: Expr,
    },
    /// `x = expr;`: only inside `for`, to the value the loop carries.
    Assign {
        name: Ident,
        value: Expr,
    },
    Param(ParamDecl),
    /// `for h in 0..L { ... }`: a block repeated `count` times, its parameters
    /// named `h0.…`, `h1.…`.
    For {
        var: Ident,
        count: DimExpr,
        body: Block,
        range: Range,
    },
    /// `loss expr;`
    Loss {
        value: Expr,
        range: Range,
    },
    /// `output logits;`: a value the generated `outputs` function returns.
    Output {
        value: Expr,
        range: Range,
    },
}

pub struct Expr {
    pub kind: ExprKind,
    pub range: Range,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Matmul,
}

pub enum ExprKind {
    /// A name, possibly dotted (`ln1.g`); a trailing `.T` may mean transpose.
    Path(Vec<Ident>),
    Num(f64),
    /// `[N, D]`, an argument of `reshape`.
    Shape(Vec<DimExpr>),
    Call {
        func: Ident,
        args: Vec<Expr>,
        kwargs: Vec<(Ident, Expr)>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Neg(Box<Expr>),
    /// `table[idx]`: embedding lookup.
    Lookup {
        table: Box<Expr>,
        index: Box<Expr>,
    },
    /// `(expr).T`
    Transpose(Box<Expr>),
}
