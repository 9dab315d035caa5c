//! Finding the audit's victims and policies on a live server from what the
//! server says of itself (`ListModels`, `GetModel`): a victim is recognized
//! by the SHA-256 of its circuits (`ModelSpec.member_sha256`), a policy is
//! read from the structured `Policy` message. No model name means anything.

use std::path::Path;

use blindfold_proto::v1;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::suite::PolicyTarget;
use super::AuditError;

/// What a victim is for in the reference suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A softmax regression: equation solving and retraining.
    Logreg,
    /// R1: extraction, membership, inversion, transfer, utility.
    Mlp,
    /// R1's architecture trained with canaries: memorization.
    Canary,
    /// A PATE ensemble.
    Pate,
}

/// A served model as `GetModel` describes it.
#[derive(Clone, Debug)]
pub struct Served {
    pub name: String,
    pub member_sha256: Vec<Vec<u8>>,
    pub policy: v1::Policy,
}

impl Served {
    pub fn from_spec(spec: &v1::ModelSpec) -> Result<Self, AuditError> {
        Ok(Self {
            name: spec.name.clone(),
            member_sha256: spec.member_sha256.clone(),
            policy: spec.policy.ok_or_else(|| {
                AuditError::Invalid(format!("model {} reports no policy", spec.name))
            })?,
        })
    }
}

/// The victims the audit knows, by the hashes of their circuits.
pub struct Victims {
    roles: Vec<(Role, Vec<Vec<u8>>)>,
}

impl Victims {
    /// The reference suite's victims: the shipped circuits under `models/`
    /// (their files' SHA-256, as a server hashes what it loads).
    pub fn reference(repo: &Path) -> Result<Self, AuditError> {
        let hash = |file: &str| -> Result<Vec<u8>, AuditError> {
            let path = repo.join("models").join(file);
            let bytes = std::fs::read(&path)
                .map_err(|e| AuditError::Invalid(format!("{}: {e}", path.display())))?;
            Ok(Sha256::digest(&bytes).to_vec())
        };
        Ok(Self {
            roles: vec![
                (Role::Logreg, vec![hash("digits-logreg.circuit.json")?]),
                (Role::Mlp, vec![hash("digits-mlp-exact.circuit.json")?]),
                (Role::Canary, vec![hash("digits-canary.circuit.json")?]),
                (
                    Role::Pate,
                    (0..5)
                        .map(|i| hash(&format!("digits-pate-t{i}.circuit.json")))
                        .collect::<Result<_, _>>()?,
                ),
            ],
        })
    }

    fn role_of(&self, m: &Served) -> Option<Role> {
        self.roles
            .iter()
            .find(|(_, h)| *h == m.member_sha256)
            .map(|(r, _)| *r)
    }
}

/// A policy without its budget: what an attacker's answers look like.
#[derive(Clone, Debug, PartialEq)]
struct Shape {
    output: i32,
    scores_bits: u32,
    top_k: u32,
    noise: i32,
    noise_scale: f64,
    clamp_inputs: bool,
    aggregate: i32,
    members: u32,
}

impl Shape {
    fn of(p: &v1::Policy) -> Self {
        Self {
            output: p.output,
            scores_bits: p.scores_bits,
            top_k: p.top_k,
            noise: p.noise,
            noise_scale: if p.noise == v1::NoiseKind::None as i32 {
                0.0
            } else {
                p.noise_scale
            },
            clamp_inputs: p.clamp_inputs,
            aggregate: p.aggregate,
            members: p.members,
        }
    }

    fn is_reference(&self) -> bool {
        self.noise == v1::NoiseKind::None as i32
            && !self.clamp_inputs
            && if self.aggregate == v1::Aggregate::Votes as i32 {
                self.output == v1::OutputMode::Label as i32
            } else {
                self.output == v1::OutputMode::Raw as i32
            }
    }

    /// In words, e.g. "label + noise σ=1 + 1000 answers".
    fn describe(&self, budget: Option<u64>) -> String {
        let votes = self.aggregate == v1::Aggregate::Votes as i32 && self.members > 1;
        let mut s = if votes {
            let noise = if self.noise == v1::NoiseKind::Gaussian as i32 {
                format!(", GNMax σ={}", self.noise_scale)
            } else {
                String::new()
            };
            format!("PATE ({} teachers{noise})", self.members)
        } else {
            let base = match v1::OutputMode::try_from(self.output) {
                Ok(v1::OutputMode::Raw) => "none (raw scores)".to_string(),
                Ok(v1::OutputMode::Scores) => {
                    format!("scores truncated to {} bits", self.scores_bits)
                }
                Ok(v1::OutputMode::TopK) => format!("top-{}", self.top_k),
                _ => "label".to_string(),
            };
            match v1::NoiseKind::try_from(self.noise) {
                Ok(v1::NoiseKind::Gaussian) => format!("{base} + noise σ={}", self.noise_scale),
                Ok(v1::NoiseKind::Laplace) => {
                    format!("{base} + Laplace noise b={}", self.noise_scale)
                }
                _ => base,
            }
        };
        if self.clamp_inputs {
            s.push_str(" + input clamp");
        }
        if let Some(b) = budget {
            s.push_str(&format!(" + {b} answers"));
        }
        s
    }

    /// Audit order: weaker policies first.
    fn order(&self) -> (bool, i32, f64, bool) {
        (
            self.aggregate == v1::Aggregate::Votes as i32,
            self.output,
            self.noise_scale,
            self.clamp_inputs,
        )
    }
}

fn budget_of(m: &Served) -> Option<u64> {
    m.policy.budget.as_ref().and_then(|b| b.answers)
}

/// The policies to audit and which served models carry them. A policy
/// with an answer budget is audited on unlimited twins of its models (the
/// same circuits and policy, no budget) when the server has them, with the
/// budget enforced per attack, else on the budgeted models themselves; a
/// policy served both with and without a budget is audited once, with it.
pub fn targets(served: &[Served], victims: &Victims) -> Vec<PolicyTarget> {
    let tagged: Vec<(Role, &Served, Shape)> = served
        .iter()
        .filter_map(|m| victims.role_of(m).map(|r| (r, m, Shape::of(&m.policy))))
        .collect();
    let reference = |role: Role| {
        tagged
            .iter()
            .find(|(r, m, s)| *r == role && s.is_reference() && budget_of(m).is_none())
            .map(|(_, m, _)| m.name.clone())
    };
    let mut shapes: Vec<(Shape, Option<u64>)> = Vec::new();
    for (role, m, shape) in &tagged {
        if *role == Role::Pate && shape.is_reference() {
            continue;
        }
        let budget = budget_of(m);
        match shapes.iter_mut().find(|(s, _)| s == shape) {
            Some((_, b)) => *b = b.or(budget),
            None => shapes.push((shape.clone(), budget)),
        }
    }
    shapes.sort_by(|(a, ab), (b, bb)| {
        let (a, b) = (a.order(), b.order());
        (a.0, ab.is_some(), a.1, a.2, a.3)
            .partial_cmp(&(b.0, bb.is_some(), b.1, b.2, b.3))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    shapes
        .into_iter()
        .map(|(shape, budget)| {
            // an unlimited twin if there is one, else the budgeted model
            let carrier = |role: Role| {
                let of = |limited: bool| {
                    tagged
                        .iter()
                        .find(|(r, m, s)| {
                            *r == role && *s == shape && budget_of(m).is_some() == limited
                        })
                        .map(|(_, m, _)| m.name.clone())
                };
                of(false).or_else(|| of(true))
            };
            let pate = shape.aggregate == v1::Aggregate::Votes as i32;
            PolicyTarget {
                policy: shape.describe(budget),
                logreg: if pate { None } else { carrier(Role::Logreg) },
                mlp: carrier(if pate { Role::Pate } else { Role::Mlp }),
                canary: if pate { None } else { carrier(Role::Canary) },
                logreg_reference: if pate { None } else { reference(Role::Logreg) },
                mlp_reference: reference(if pate { Role::Pate } else { Role::Mlp }),
                budget,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(name: &str, members: &[u8], policy: v1::Policy) -> Served {
        Served {
            name: name.into(),
            member_sha256: members.iter().map(|m| vec![*m; 32]).collect(),
            policy,
        }
    }

    fn policy(output: v1::OutputMode, sigma: f64, answers: Option<u64>) -> v1::Policy {
        v1::Policy {
            output: output as i32,
            noise: if sigma > 0.0 {
                v1::NoiseKind::Gaussian as i32
            } else {
                v1::NoiseKind::None as i32
            },
            noise_scale: sigma,
            members: 1,
            budget: Some(v1::BudgetLimits {
                answers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn victims_by_hash_and_policies_by_their_fields() {
        let victims = Victims {
            roles: vec![
                (Role::Logreg, vec![vec![1; 32]]),
                (Role::Mlp, vec![vec![2; 32]]),
            ],
        };
        use v1::OutputMode::{Label, Raw};
        // names that say nothing; a stranger's model is ignored
        let models = vec![
            served("a", &[2], policy(Label, 0.5, Some(10))),
            served("b", &[1], policy(Raw, 0.0, None)),
            served("c", &[2], policy(Raw, 0.0, None)),
            served("d", &[2], policy(Label, 0.5, None)),
            served("e", &[9], policy(Label, 0.0, None)),
            served("f", &[2], policy(Label, 0.0, None)),
        ];
        let t = targets(&models, &victims);
        let names: Vec<&str> = t.iter().map(|t| t.policy.as_str()).collect();
        assert_eq!(
            names,
            [
                "none (raw scores)",
                "label",
                "label + noise σ=0.5 + 10 answers"
            ]
        );
        assert_eq!(t[0].mlp.as_deref(), Some("c"));
        assert_eq!(t[0].logreg.as_deref(), Some("b"));
        assert_eq!(t[1].mlp.as_deref(), Some("f"));
        assert_eq!(t[1].logreg, None);
        // the budgeted policy runs on its unlimited twin, budget enforced
        assert_eq!(t[2].mlp.as_deref(), Some("d"));
        assert_eq!(t[2].budget, Some(10));
        assert!(t.iter().all(|t| t.mlp_reference.as_deref() == Some("c")));
    }
}
