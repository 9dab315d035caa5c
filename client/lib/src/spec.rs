//! The model spec a server sends, turned into a checked [`ClientSpec`].

use blindfold_proto::v1;
use blindfold_runtime::circuit::{ClientSpec, InputSpec, OutputKind};
use blindfold_runtime::data::Preprocessing;
use blindfold_runtime::params::ParamSet;

use crate::error::ClientError;

/// Converts and validates; the server is not trusted to send sane values.
pub fn from_proto(spec: &v1::ModelSpec) -> Result<ClientSpec, ClientError> {
    let bad = |m: &str| ClientError::Spec(format!("model {:?}: {m}", spec.name));
    let params = ParamSet::from_name(&spec.parameter_set)
        .ok_or_else(|| bad(&format!("unknown parameter set {:?}", spec.parameter_set)))?;
    let input = spec.input.as_ref().ok_or_else(|| bad("no input spec"))?;
    let output = spec.output.as_ref().ok_or_else(|| bad("no output spec"))?;
    let preprocessing = match input.preprocessing.as_ref().and_then(|p| p.kind.as_ref()) {
        None | Some(v1::preprocessing::Kind::None(_)) => Preprocessing::None,
        Some(v1::preprocessing::Kind::Standardize(s)) => Preprocessing::Standardize {
            mean: s.mean.clone(),
            std: s.std.clone(),
        },
    };
    let kind = match v1::OutputKind::try_from(output.kind) {
        Ok(v1::OutputKind::Logits) => {
            if output.count != output.classes {
                return Err(bad("logit answers must hold one value per class"));
            }
            OutputKind::Logits
        }
        Ok(v1::OutputKind::Labels) => OutputKind::Labels {
            k: output.count as usize,
        },
        Err(_) => return Err(bad(&format!("unknown output kind {}", output.kind))),
    };
    let client = ClientSpec {
        name: spec.name.clone(),
        params,
        precision_bits: spec.precision_bits,
        input: InputSpec {
            shape: input.shape.iter().map(|d| *d as usize).collect(),
            bits: input.bits,
            scale: input.scale.clone(),
            zero_point: input.zero_point.clone(),
            preprocessing,
        },
        classes: output.classes as usize,
        output_bits: output.bits,
        output_scale: output.scale,
        output_zero_point: output.zero_point,
        output: kind,
    };
    client.validate().map_err(|e| bad(&e.to_string()))?;
    Ok(client)
}
