"""A Blindfold client in Python (grpcio), used by tests/tests/python_client.rs.

It generates its stubs from proto/blindfold/v1/*.proto with grpc_tools at run
time, then: checks health, lists services by reflection, lists models, calls
PredictClear, and sends encrypted inputs that the `blindfold` CLI wrote
(`blindfold encrypt`), saving the encrypted answers for `blindfold decrypt`.
Prints one JSON object on stdout.
"""

import argparse
import csv
import importlib
import json
import os
import sys
import tempfile


def generate_stubs(proto_root, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join("blindfold", "v1", name)
        for name in ("models.proto", "keys.proto", "inference.proto")
    ]
    args = ["protoc", f"-I{proto_root}", f"-I{include}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages, first on the path: the generated `blindfold.v1`
    # must win over an installed `blindfold` (the Python client package),
    # which would otherwise shadow a namespace package of the same name.
    for pkg in ("blindfold", os.path.join("blindfold", "v1")):
        open(os.path.join(out_dir, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    sys.modules.pop("blindfold", None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="host:port")
    ap.add_argument("--token", required=True)
    ap.add_argument("--proto-root", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--key-id", required=True)
    ap.add_argument("--csv", required=True, help="features-only CSV for PredictClear")
    ap.add_argument("--out", required=True, help="directory for the encrypted answers")
    ap.add_argument("inputs", nargs="+", help="encrypted input files from `blindfold encrypt`")
    a = ap.parse_args()

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stubs = tempfile.mkdtemp(prefix="blindfold-stubs-")
    generate_stubs(a.proto_root, stubs)
    models_pb2 = importlib.import_module("blindfold.v1.models_pb2")
    models_grpc = importlib.import_module("blindfold.v1.models_pb2_grpc")
    inference_pb2 = importlib.import_module("blindfold.v1.inference_pb2")
    inference_grpc = importlib.import_module("blindfold.v1.inference_pb2_grpc")

    channel = grpc.insecure_channel(
        a.server,
        options=[("grpc.max_receive_message_length", 256 << 20)],
    )
    auth = [("authorization", f"Bearer {a.token}")]
    result = {}

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="blindfold.v1.Inference"))
    result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    result["services"] = sorted(
        s.name for r in responses for s in r.list_services_response.service
    )

    models = models_grpc.ModelsStub(channel)
    listing = models.ListModels(models_pb2.ListModelsRequest(), metadata=auth)
    result["models"] = [m.name for m in listing.models]
    spec = models.GetModel(models_pb2.GetModelRequest(name=a.model), metadata=auth)
    result["bootstraps_per_inference"] = spec.bootstraps_per_inference

    try:
        models.ListModels(models_pb2.ListModelsRequest())
        result["anonymous"] = "OK"
    except grpc.RpcError as e:
        result["anonymous"] = e.code().name

    with open(a.csv) as f:
        rows = [r for r in csv.reader(f)]
    if rows and not rows[0][0].replace(".", "", 1).isdigit():
        rows = rows[1:]
    features = [inference_pb2.Features(values=[float(v) for v in r]) for r in rows]
    inference = inference_grpc.InferenceStub(channel)
    clear = inference.PredictClear(
        inference_pb2.PredictClearRequest(model=a.model, inputs=features), metadata=auth
    )
    result["clear_labels"] = [p.label for p in clear.predictions]

    blobs = []
    for path in a.inputs:
        with open(path, "rb") as f:
            blobs.append(f.read())
    answer = inference.Predict(
        inference_pb2.PredictRequest(model=a.model, key_id=a.key_id, inputs=blobs),
        metadata=auth,
    )
    os.makedirs(a.out, exist_ok=True)
    written = []
    for i, blob in enumerate(answer.outputs):
        path = os.path.join(a.out, f"output-{i:04d}.bin")
        with open(path, "wb") as f:
            f.write(blob)
        written.append(path)
    result["outputs"] = written
    result["bootstraps"] = answer.timing.bootstraps
    print(json.dumps(result))


if __name__ == "__main__":
    main()
