//! Small constructors for hand-built ONNX models (tests, fixtures).
//!
//! ```
//! use blindfold_compiler::onnx::builder::*;
//!
//! let model = model(
//!     "input",
//!     &[2],
//!     "y",
//!     vec![node("Relu", "relu", &["input"], &["y"], vec![])],
//!     vec![],
//! );
//! let graph = blindfold_compiler::onnx::import_onnx_bytes(&encode(&model), "relu").unwrap();
//! assert_eq!(graph.input_shape, vec![2]);
//! ```

use prost::Message;

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A float32 tensor (values in `float_data`).
pub fn tensor_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// An int64 tensor (values in `int64_data`).
pub fn tensor_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A node in the default domain.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: ty as i32,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        i: value,
        ..attr(name, AttributeType::Int)
    }
}

pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: values.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        f: value,
        ..attr(name, AttributeType::Float)
    }
}

pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: value.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}

pub fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(value),
        ..attr(name, AttributeType::Tensor)
    }
}

/// A float32 value declaration with a symbolic leading `batch` axis
/// followed by `per_sample` dims.
pub fn batched_value_info(name: &str, per_sample: &[i64]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(dimension::Value::DimParam("batch".to_string())),
    }];
    dim.extend(per_sample.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d)),
    }));
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
    }
}

/// A one-input, one-output opset-13 model with a symbolic batch axis.
pub fn model(
    input: &str,
    input_per_sample: &[i64],
    output: &str,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 7,
        producer_name: "blindfold-builder".to_string(),
        producer_version: String::new(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "graph".to_string(),
            node: nodes,
            initializer: initializers,
            input: vec![batched_value_info(input, input_per_sample)],
            output: vec![ValueInfoProto {
                name: output.to_string(),
                r#type: None,
            }],
            value_info: vec![],
        }),
    }
}

/// Serializes a model to ONNX bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
