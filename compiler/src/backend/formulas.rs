//! Every parameter's derived gradient as text, in Unicode and LaTeX, and as the
//! generated module's `formulas` constants.
//!
//! A parameter's formula is printed from the stage that uses it, in terms of that
//! stage's values and of the gradient flowing into the stage (`dx_next` for a loop
//! body). A parameter used by several stages (the tied embedding) gets one formula per
//! stage, `∂L/∂E⁽ᵏ⁾`, and a last line summing them.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::pretty::{self, Style, superscript};
use crate::program::{Program, Scope};

/// `(file name, formula)` per parameter; loop parameters are named `h{i}.attn.wq`.
pub fn param_formulas(p: &Program, style: Style) -> Vec<(String, String)> {
    p.params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let name = match q.scope {
                Scope::Model => q.name.clone(),
                Scope::Loop(l) => format!("{}{{i}}.{}", p.loops[l].var, q.name),
            };
            let label = format!("∂L/∂{}", q.display);
            let uses: Vec<(usize, crate::ir::ValueId)> = p
                .stages
                .iter()
                .enumerate()
                .filter_map(|(k, s)| {
                    let b = s.backward.as_ref()?;
                    b.param_grads.iter().find(|g| g.0 == i).map(|g| (k, g.1))
                })
                .collect();
            let mut text = String::new();
            if let [(k, id)] = uses.as_slice() {
                text += &pretty::formulas(&p.stages[*k].graph, &[(label, *id)], style);
            } else {
                let mut parts = Vec::new();
                for (k, id) in &uses {
                    let part = format!("{label}⁽{}⁾", superscript(*k));
                    text += &pretty::formulas(&p.stages[*k].graph, &[(part.clone(), *id)], style);
                    parts.push(pretty::label(&part, style));
                }
                text += &format!("{} = {}\n", pretty::label(&label, style), parts.join(" + "));
            }
            (name, text)
        })
        .collect()
}

pub fn emit(p: &Program) -> TokenStream {
    let uni = param_formulas(p, Style::Unicode);
    let tex = param_formulas(p, Style::Latex);
    let mut consts = Vec::new();
    let mut all = Vec::new();
    for ((name, u), (_, t)) in uni.iter().zip(&tex) {
        let base: String = name
            .replace("{i}", "")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
            .collect();
        let (cu, ct) = (format_ident!("{}", base), format_ident!("{}_LATEX", base));
        let doc = format!(" `{name}`'s gradient.");
        consts.push(quote! {
            #[doc = #doc]
            pub const #cu: &str = #u;
            pub const #ct: &str = #t;
        });
        all.push(quote!((#name, #cu, #ct)));
    }
    quote! {
        /// Each parameter's derived gradient formula, in Unicode and LaTeX.
        pub mod formulas {
            #(#consts)*
            /// `(file name, Unicode, LaTeX)` for every parameter, in declaration order.
            pub const ALL: &[(&str, &str, &str)] = &[#(#all),*];
        }
    }
}
