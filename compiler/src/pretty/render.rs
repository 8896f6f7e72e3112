//! Rendering: names, constants and expressions in Unicode or LaTeX, with the fewest
//! parentheses that keep the reading unambiguous.

use std::collections::{BTreeMap, BTreeSet};

use crate::dim::Dim;
use crate::ir::{Graph, ValueId};
use crate::pretty::{Form, Func, Infix, Style, visible};
use crate::scalar::Scalar;

const SUM: u8 = 1;
const PROD: u8 = 2;
const NEG: u8 = 3;
const POST: u8 = 4;
const ATOM: u8 = 5;

/// A rendered subexpression and how tightly it binds.
pub struct Doc {
    pub text: String,
    prec: u8,
    infix: Option<Infix>,
}

fn atom(text: String) -> Doc {
    Doc { text, prec: ATOM, infix: None }
}

fn paren(d: Doc, need: bool, style: Style) -> String {
    match (need, style) {
        (false, _) => d.text,
        (true, Style::Unicode) => format!("({})", d.text),
        (true, Style::Latex) => format!("\\left({}\\right)", d.text),
    }
}

/// Unique display names for values, already in the output style.
pub struct Names {
    style: Style,
    by_id: BTreeMap<ValueId, String>,
    taken: BTreeSet<String>,
}

impl Names {
    pub fn new(style: Style) -> Names {
        Names { style, by_id: BTreeMap::new(), taken: BTreeSet::new() }
    }

    fn unique(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut k = 2;
        while self.taken.contains(&candidate) {
            candidate = format!("{base}⁽{}⁾", superscript(k));
            k += 1;
        }
        self.taken.insert(candidate.clone());
        candidate
    }

    pub fn assign(&mut self, id: ValueId, base: &str) {
        let unique = self.unique(base);
        let styled = name(&unique, self.style);
        self.by_id.insert(id, styled);
    }

    /// Inputs keep their own names (their uniqueness is the graph's invariant).
    pub fn assign_leaf(&mut self, id: ValueId, base: &str) {
        self.taken.insert(base.to_string());
        self.by_id.insert(id, name(base, self.style));
    }

    pub fn assign_label(&mut self, id: ValueId, text: &str) {
        self.taken.insert(text.to_string());
        self.by_id.insert(id, label(text, self.style));
    }

    pub fn get(&self, id: ValueId) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

/// `12` as `¹²`.
pub fn superscript(k: usize) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    k.to_string().chars().map(|c| DIGITS[c.to_digit(10).unwrap_or(0) as usize]).collect()
}

/// A name in the output style: Unicode as written; LaTeX with Greek letters, hats,
/// subscripts and multi-letter words spelled out.
pub fn name(text: &str, style: Style) -> String {
    if style == Style::Unicode {
        return text.to_string();
    }
    // A de-duplication suffix `⁽²⁾` becomes `^{(2)}`.
    let (text, sup) = match text.find('⁽') {
        Some(i) => {
            let digits: String = text[i..]
                .chars()
                .filter_map(|c| "⁰¹²³⁴⁵⁶⁷⁸⁹".chars().position(|d| d == c))
                .map(|d| char::from(b'0' + d as u8))
                .collect();
            (&text[..i], format!("^{{({digits})}}"))
        }
        None => (text, String::new()),
    };
    let (base, sub) = match text.split_once('_') {
        Some((b, s)) => (b, format!("_{{{}}}", latex_chars(s))),
        None => (text, String::new()),
    };
    let letters = base.chars().filter(|c| c.is_alphabetic()).count();
    let body = latex_chars(base);
    let body = if letters > 1 && !base.chars().all(|c| "μσγβεαδΦ".contains(c)) {
        format!("\\mathrm{{{body}}}")
    } else {
        body
    };
    format!("{body}{sub}{sup}")
}

fn latex_chars(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if chars.get(i + 1) == Some(&'\u{302}') {
            out.push_str(&format!("\\hat{{{c}}}"));
            i += 2;
            continue;
        }
        match c {
            'μ' => out.push_str("\\mu "),
            'σ' => out.push_str("\\sigma "),
            'γ' => out.push_str("\\gamma "),
            'β' => out.push_str("\\beta "),
            'ε' => out.push_str("\\varepsilon "),
            'Φ' => out.push_str("\\Phi "),
            '²' => out.push_str("^{2}"),
            '¹' => out.push_str("^{1}"),
            '³' => out.push_str("^{3}"),
            '⁴' => out.push_str("^{4}"),
            '⁵' => out.push_str("^{5}"),
            'ᵀ' => out.push_str("^\\top "),
            _ => out.push(c),
        }
        i += 1;
    }
    out.trim_end().to_string()
}

/// An output label: `∂L/∂W` becomes `\frac{\partial L}{\partial W}` in LaTeX.
pub fn label(text: &str, style: Style) -> String {
    match (style, text.strip_prefix("∂L/∂")) {
        (Style::Latex, Some(rest)) => format!("\\frac{{\\partial L}}{{\\partial {}}}", name(rest, style)),
        _ => name(text, style),
    }
}

/// Renders expressions, referring to bound values by name.
pub struct Printer<'a> {
    g: &'a Graph,
    names: &'a Names,
    style: Style,
}

impl<'a> Printer<'a> {
    pub fn new(g: &'a Graph, names: &'a Names, style: Style) -> Printer<'a> {
        Printer { g, names, style }
    }

    /// A value as an operand: its name if bound, else its expression.
    pub fn render(&mut self, id: ValueId) -> Doc {
        let id = visible(self.g, id);
        match self.names.get(id) {
            Some(n) => atom(n.to_string()),
            None => self.expr_doc(id),
        }
    }

    /// The defining expression of a bound value.
    pub fn expr_of(&mut self, id: ValueId) -> String {
        self.expr_doc(visible(self.g, id)).text
    }

    fn dim(&self, d: &Dim) -> String {
        match self.g.dim_alias(d) {
            Some(a) => name(a, self.style),
            None => d.to_string(),
        }
    }

    /// A constant's factors as (numerator, denominator) texts.
    fn scalar_parts(&self, s: &Scalar) -> (Vec<String>, Vec<String>) {
        let (mut num, mut den) = (Vec::new(), Vec::new());
        for (d, e) in &s.factors {
            let dim = self.dim(d);
            let compound = dim.contains(['*', '/', '+', '-']);
            let base = if compound { format!("({dim})") } else { dim.clone() };
            let root = match self.style {
                Style::Unicode => format!("√{base}"),
                Style::Latex => format!("\\sqrt{{{dim}}}"),
            };
            let text = match e.abs() {
                1 => root,
                2 => base,
                k if k % 2 == 0 => format!("{base}^{}", k / 2),
                k => format!("{base}^{{{k}/2}}"),
            };
            if *e < 0 { den.push(text) } else { num.push(text) }
        }
        (num, den)
    }

    fn scalar(&self, s: &Scalar) -> String {
        if let Some(sym) = s.symbol {
            return name(sym, self.style);
        }
        let coef = if s.coef == f64::NEG_INFINITY {
            match self.style {
                Style::Unicode => "−∞".to_string(),
                Style::Latex => "-\\infty".to_string(),
            }
        } else if self.style == Style::Unicode && s.coef < 0.0 {
            format!("−{}", -s.coef)
        } else {
            format!("{}", s.coef)
        };
        let (num, den) = self.scalar_parts(s);
        let mut top = if num.is_empty() || s.coef != 1.0 { vec![coef] } else { vec![] };
        top.extend(num);
        let top = top.join("·");
        match (den.is_empty(), self.style) {
            (true, _) => top,
            (false, Style::Unicode) => format!("{top}/{}", den.join("·")),
            (false, Style::Latex) => format!("\\frac{{{top}}}{{{}}}", den.join(" ")),
        }
    }

    fn call(&self, unicode: &str, latex: &str, args: &[String]) -> Doc {
        let head = if self.style == Style::Unicode { unicode } else { latex };
        atom(format!("{head}({})", args.join(", ")))
    }

    fn arg(&mut self, id: ValueId) -> String {
        self.render(id).text
    }

    fn infix(&self, op: Infix, l: Doc, r: Doc) -> Doc {
        let (prec, uni, tex) = match op {
            Infix::Add => (SUM, " + ", " + "),
            Infix::Sub => (SUM, " − ", " - "),
            Infix::Matmul => (PROD, "·", " \\, "),
            Infix::Hadamard => (PROD, " ⊙ ", " \\odot "),
            Infix::Divide => (PROD, " ⊘ ", " \\oslash "),
        };
        let left_parens = l.prec < prec || (prec == PROD && l.prec == PROD && l.infix != Some(op));
        let right_parens = if op == Infix::Add { r.prec < prec } else { r.prec <= prec };
        let sym = if self.style == Style::Unicode { uni } else { tex };
        Doc {
            text: format!("{}{sym}{}", paren(l, left_parens, self.style), paren(r, right_parens, self.style)),
            prec,
            infix: Some(op),
        }
    }

    fn expr_doc(&mut self, id: ValueId) -> Doc {
        let node = self.g.node(id);
        let ins = node.inputs.clone();
        let style = self.style;
        let uni = style == Style::Unicode;
        match node.op.form() {
            Form::Leaf => atom(self.names.get(id).map(str::to_string).unwrap_or_else(|| "?".into())),
            Form::Const(c) => {
                let text = self.scalar(&c);
                // `−1/N` must not read as `−(1/N ⊙ Y)` or `1/(N ⊙ Y)`.
                let compound = text.contains(['/', '−', '-', '·']) || text.starts_with("\\frac");
                Doc { text, prec: if compound { PROD } else { ATOM }, infix: None }
            }
            Form::Transparent => self.render(ins[0]),
            Form::Infix(op) => {
                let (l, r) = (self.render(ins[0]), self.render(ins[1]));
                self.infix(op, l, r)
            }
            Form::Neg => {
                let x = self.render(ins[0]);
                let need = x.prec < NEG;
                Doc {
                    text: format!("{}{}", if uni { "−" } else { "-" }, paren(x, need, style)),
                    prec: NEG,
                    infix: None,
                }
            }
            Form::Scale(c) => {
                let x = self.render(ins[0]);
                if c.is_divisor() {
                    let (_, den) = self.scalar_parts(&c);
                    let sign = if c.coef < 0.0 { if uni { "−" } else { "-" } } else { "" };
                    if uni {
                        let need = x.prec < PROD;
                        let text = format!("{sign}{} / {}", paren(x, need, style), den.join("·"));
                        Doc { text, prec: PROD, infix: None }
                    } else {
                        atom(format!("{sign}\\frac{{{}}}{{{}}}", x.text, den.join(" ")))
                    }
                } else {
                    let need = x.prec <= PROD && x.infix.is_some() || x.prec < PROD;
                    let sep = if uni { "·" } else { " \\, " };
                    let text = format!("{}{sep}{}", self.scalar(&c), paren(x, need, style));
                    Doc { text, prec: PROD, infix: None }
                }
            }
            Form::Shift(c) => {
                let x = self.render(ins[0]);
                let text = format!("{} + {}", x.text, self.scalar(&c));
                Doc { text, prec: SUM, infix: Some(Infix::Add) }
            }
            Form::Call(f) => {
                let (u, t) = match f {
                    Func::Exp => ("exp", "\\exp"),
                    Func::Log => ("log", "\\log"),
                    Func::Tanh => ("tanh", "\\tanh"),
                    Func::Relu => ("relu", "\\operatorname{relu}"),
                    Func::Gelu => ("gelu", "\\operatorname{gelu}"),
                    Func::GeluGrad => ("gelu′", "\\operatorname{gelu}'"),
                };
                let a = self.arg(ins[0]);
                self.call(u, t, &[a])
            }
            Form::Sqrt => {
                let x = self.render(ins[0]);
                if uni {
                    let need = x.prec < ATOM;
                    atom(format!("√{}", paren(x, need, style)))
                } else {
                    atom(format!("\\sqrt{{{}}}", x.text))
                }
            }
            Form::Positive => {
                let x = self.arg(ins[0]);
                atom(format!("[{x} > 0]"))
            }
            Form::Transpose => {
                let x = self.render(ins[0]);
                let need = x.prec < POST;
                let mark = if uni { "ᵀ" } else { "^\\top" };
                Doc { text: format!("{}{mark}", paren(x, need, style)), prec: POST, infix: None }
            }
            Form::Permute(p) => {
                let order: String = p.iter().map(|a| a.to_string()).collect();
                let a = self.arg(ins[0]);
                self.call(
                    &format!("permute₍{order}₎"),
                    &format!("\\operatorname{{permute}}_{{{order}}}"),
                    &[a],
                )
            }
            Form::Slice { axis, start, len } => {
                let x = self.render(ins[0]);
                let end = self.dim(&start.add(&len));
                let need = x.prec < POST;
                Doc {
                    text: format!("{}[{axis}: {}..{end}]", paren(x, need, style), self.dim(&start)),
                    prec: POST,
                    infix: None,
                }
            }
            Form::Pad { axis, before, after } => {
                let a = self.arg(ins[0]);
                let spec = format!("{axis}: {}, {}", self.dim(&before), self.dim(&after));
                self.call(&format!("pad[{spec}]"), &format!("\\operatorname{{pad}}_{{{spec}}}"), &[a])
            }
            Form::Concat(axis) => {
                let rank = self.g.shape(ins[0]).rank();
                let parts: Vec<String> = ins.iter().map(|&i| self.arg(i)).collect();
                let (uni_sep, tex_sep) = if axis + 1 == rank {
                    (" | ", " \\mid ")
                } else if axis + 2 == rank {
                    ("; ", " ; ")
                } else {
                    return self.call(
                        &format!("concat[{axis}]"),
                        &format!("\\operatorname{{concat}}_{{{axis}}}"),
                        &parts,
                    );
                };
                atom(if uni {
                    format!("[{}]", parts.join(uni_sep))
                } else {
                    format!("\\left[{}\\right]", parts.join(tex_sep))
                })
            }
            Form::Sum(axis) | Form::Max(axis) => {
                let is_sum = matches!(node.op.form(), Form::Sum(_));
                let shape = self.g.shape(ins[0]).clone();
                let a = self.arg(ins[0]);
                let (word, tex) = if is_sum { ("sum", "\\sum") } else { ("max", "\\max") };
                if shape.rank() == 1 {
                    self.call(if is_sum { "Σ" } else { "max" }, tex, &[a])
                } else if axis + 1 == shape.rank() {
                    self.call(&format!("row{word}"), &format!("\\operatorname{{row{word}}}"), &[a])
                } else if shape.rank() == 2 && axis == 0 {
                    self.call(&format!("col{word}"), &format!("\\operatorname{{col{word}}}"), &[a])
                } else {
                    let d = self.dim(&shape.0[axis]);
                    let head = if is_sum { format!("Σ_{d}") } else { format!("max_{d}") };
                    self.call(&head, &format!("{tex}_{{{d}}}"), &[a])
                }
            }
            Form::Argmax(_) => {
                let a = self.arg(ins[0]);
                self.call("onehot∘argmax", "\\operatorname{onehot}\\circ\\operatorname{argmax}", &[a])
            }
            Form::Gather => {
                let (t, i) = (self.render(ins[0]), self.arg(ins[1]));
                let need = t.prec < POST;
                Doc { text: format!("{}[{i}]", paren(t, need, style)), prec: POST, infix: None }
            }
            Form::ScatterAdd => {
                let (v, i) = (self.arg(ins[0]), self.arg(ins[1]));
                self.call("scatter_add", "\\operatorname{scatter\\_add}", &[v, i])
            }
            Form::OneHot => {
                let i = self.arg(ins[0]);
                self.call("onehot", "\\operatorname{onehot}", &[i])
            }
            Form::Causal(fill) => {
                let a = self.arg(ins[0]);
                let f = if fill.is_zero() {
                    if uni { "₀".to_string() } else { "0".to_string() }
                } else if uni {
                    "₋∞".to_string()
                } else {
                    self.scalar(&fill)
                };
                self.call(&format!("mask{f}"), &format!("\\operatorname{{mask}}_{{{f}}}"), &[a])
            }
            Form::Select => {
                let args: Vec<String> = ins.iter().map(|&i| self.arg(i)).collect();
                self.call("select", "\\operatorname{select}", &args)
            }
        }
    }
}
