//! `blindfold-proto`: the gRPC contract, package `blindfold.v1`.
//!
//! Keys and ciphertexts are opaque, versioned bytes produced by the client
//! library; the `.proto` files in `proto/blindfold/v1/` are the contract for
//! clients in other languages. `blindfold-server` implements the services;
//! `blindfold-client` wraps the generated client.

/// Generated messages, clients (`*_client`) and servers (`*_server`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("blindfold.v1");
}

/// Encoded `FileDescriptorSet` of `blindfold.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/blindfold_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_lists_the_three_services() {
        let set = prost_types_free_decode(super::FILE_DESCRIPTOR_SET);
        for service in ["Models", "Keys", "Inference"] {
            assert!(
                set.contains(&service.to_string()),
                "{service} missing: {set:?}"
            );
        }
    }

    /// Service names from an encoded FileDescriptorSet, read with a tiny
    /// local message definition (field numbers of descriptor.proto).
    fn prost_types_free_decode(bytes: &[u8]) -> Vec<String> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Set {
            #[prost(message, repeated, tag = "1")]
            file: Vec<File>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct File {
            #[prost(string, optional, tag = "2")]
            package: Option<String>,
            #[prost(message, repeated, tag = "6")]
            service: Vec<Service>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Service {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
        }
        let set = Set::decode(bytes).expect("descriptor set decodes");
        set.file
            .iter()
            .filter(|f| f.package.as_deref() == Some("blindfold.v1"))
            .flat_map(|f| f.service.iter().filter_map(|s| s.name.clone()))
            .collect()
    }

    #[test]
    fn messages_roundtrip() {
        let req = super::v1::PredictRequest {
            model: "digits-mlp".into(),
            key_id: "ab".into(),
            inputs: vec![vec![1, 2, 3]],
        };
        let back = super::v1::PredictRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
    }
}
